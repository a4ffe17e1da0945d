#include "ops/gated_diag/reference.h"

namespace elman::ops {

std::vector<torch::Tensor> gated_diag_reference(DiagCell cell, const torch::Tensor& proj, const torch::Tensor& w_in,
                                                const torch::Tensor& h0) {
  TORCH_CHECK(proj.dim() == 3 && proj.size(2) % 2 == 0, "gated_diag: proj must be [B,T,2D], got ", proj.sizes());
  const int64_t B = proj.size(0), T = proj.size(1), D = proj.size(2) / 2;
  const auto P = static_cast<int64_t>(diag_cell_info(cell).params.size());
  TORCH_CHECK(w_in.dim() == 2 && w_in.size(0) == P && w_in.size(1) == D, "gated_diag: w must be [", P, ",", D, "]");
  const auto ct = proj.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto halves = proj.to(ct).chunk(2, /*dim=*/2);
  auto w = w_in.to(ct);
  auto h = h0.defined() ? h0.to(ct) : torch::zeros({B, D}, proj.options().dtype(ct));
  std::vector<torch::Tensor> ys;
  ys.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    auto a = halves[0].select(1, t), p = halves[1].select(1, t);
    switch (cell) {
      case DiagCell::E61: {
        auto alpha = torch::sigmoid(a + w[0]);
        h = alpha * h + (1 - alpha) * (p + w[1]);
        break;
      }
      case DiagCell::E62: {
        auto k = torch::sigmoid(a + w[0]);
        h = (1 - k) * h + k * torch::tanh(p + w[1]);
        break;
      }
      case DiagCell::E64: {
        auto alpha = torch::sigmoid(a + w[0]);
        h = alpha * h + (1 - alpha) * torch::tanh(h + p + w[1]);
        break;
      }
      case DiagCell::E65: {
        auto alpha = torch::sigmoid(a + w[0]);
        h = alpha * h + (1 - alpha) * torch::tanh(w[2] * h + p + w[1]);
        break;
      }
      case DiagCell::E67: {
        auto alpha = torch::sigmoid(a + w[2] * h + w[0]);
        h = alpha * h + (1 - alpha) * torch::tanh(p + w[1]);
        break;
      }
      case DiagCell::E68: {
        auto alpha = torch::sigmoid(a + w[0]);
        auto g = torch::sigmoid(w[2] * h + w[3]);
        h = alpha * h + (1 - alpha) * torch::tanh(p + w[1]) * g;
        break;
      }
      case DiagCell::E74DeltaTanh: h = torch::tanh(h * (1 - a * a) + p * a); break;
      case DiagCell::E74SimpleTanh: h = torch::tanh(0.9 * h + p * a); break;
      case DiagCell::E74SimpleLinear: h = 0.9 * h + p * a; break;
    }
    ys.push_back(h * h * torch::sigmoid(h));
  }
  return {torch::stack(ys, 1).to(proj.scalar_type()), h};
}

}  // namespace elman::ops
