#include "ops/e61/reference.h"

namespace elman::ops {

std::vector<torch::Tensor> e61_reference(const torch::Tensor& proj, const torch::Tensor& b_alpha,
                                         const torch::Tensor& b_v, const torch::Tensor& h0) {
  TORCH_CHECK(proj.dim() == 3 && proj.size(2) % 2 == 0, "e61: proj must be [B,T,2D], got ", proj.sizes());
  const int64_t B = proj.size(0), T = proj.size(1), D = proj.size(2) / 2;
  const auto ct = proj.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;  // fp32, or fp64 for checks
  auto chunks = proj.to(ct).chunk(2, /*dim=*/2);
  auto alpha = torch::sigmoid(chunks[0] + b_alpha.to(ct));
  auto v = chunks[1] + b_v.to(ct);
  auto h = h0.defined() ? h0.to(ct) : torch::zeros({B, D}, proj.options().dtype(ct));
  std::vector<torch::Tensor> ys;
  ys.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    auto a_t = alpha.select(1, t);
    h = a_t * h + (1 - a_t) * v.select(1, t);
    ys.push_back(h * h * torch::sigmoid(h));
  }
  return {torch::stack(ys, 1).to(proj.scalar_type()), h};
}

}  // namespace elman::ops
