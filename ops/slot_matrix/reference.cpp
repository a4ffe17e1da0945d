#include "ops/slot_matrix/reference.h"

namespace elman::ops {

void check_slot_matrix_args(const torch::Tensor& proj, const torch::Tensor& W_r, const torch::Tensor& b,
                            const torch::Tensor& b_alpha, const torch::Tensor& S0, int64_t slots) {
  TORCH_CHECK(slots >= 1 && slots <= kSlotMatrixMaxSlots, "slot_matrix: ", slots,
              " slots are not supported; use --slots from 1 to ", kSlotMatrixMaxSlots);
  const int64_t N = slots;
  TORCH_CHECK(proj.defined() && proj.dim() == 3, "slot_matrix: proj must be [B,T,2D+2N]");
  TORCH_CHECK(proj.is_floating_point(), "slot_matrix: proj must be floating point, got ", proj.scalar_type());
  TORCH_CHECK(proj.size(0) >= 1 && proj.size(1) >= 1, "slot_matrix: empty input, proj is ", proj.sizes());
  const int64_t P = proj.size(2);
  TORCH_CHECK(P > 2 * N && (P - 2 * N) % 2 == 0, "slot_matrix: proj must be [B,T,2D+2N] with D >= 1 and N = ", N,
              " slots ([k | q | W_x x | W_alpha x]), got ", proj.sizes());
  const int64_t D = (P - 2 * N) / 2;
  auto check_vec = [&](const torch::Tensor& t, const char* name) {
    TORCH_CHECK(t.defined() && t.dim() == 1 && t.size(0) == N && t.is_floating_point(), "slot_matrix: ", name,
                " must be a float [", N, "], got ", t.defined() ? t.sizes() : torch::IntArrayRef{});
  };
  TORCH_CHECK(W_r.defined() && W_r.dim() == 2 && W_r.size(0) == N && W_r.size(1) == N && W_r.is_floating_point(),
              "slot_matrix: W_r must be a float [", N, ",", N, "], got ", W_r.defined() ? W_r.sizes() : torch::IntArrayRef{});
  check_vec(b, "b");
  check_vec(b_alpha, "b_alpha");
  if (S0.defined())
    TORCH_CHECK(S0.dim() == 3 && S0.size(0) == proj.size(0) && S0.size(1) == N && S0.size(2) == D &&
                    S0.is_floating_point(),
                "slot_matrix: S0 must be a float [", proj.size(0), ",", N, ",", D, "], got ", S0.sizes());
}

int64_t slot_matrix_width(const torch::Tensor& proj, int64_t slots) { return (proj.size(2) - 2 * slots) / 2; }

std::vector<torch::Tensor> slot_matrix_reference(const torch::Tensor& proj, const torch::Tensor& W_r,
                                                 const torch::Tensor& b, const torch::Tensor& b_alpha,
                                                 const torch::Tensor& S0, int64_t slots) {
  check_slot_matrix_args(proj, W_r, b, b_alpha, S0, slots);
  const int64_t B = proj.size(0), T = proj.size(1), N = slots, D = slot_matrix_width(proj, slots);
  const auto ct = proj.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto p = proj.to(ct);
  auto k = p.narrow(2, 0, D), q = p.narrow(2, D, D);
  auto wxb = p.narrow(2, 2 * D, N) + b.to(ct);                         // [B,T,N]
  auto alpha = torch::sigmoid(p.narrow(2, 2 * D + N, N) + b_alpha.to(ct));  // [B,T,N]
  auto Wr = W_r.to(ct);
  auto S = S0.defined() ? S0.to(ct) : torch::zeros({B, N, D}, proj.options().dtype(ct));
  std::vector<torch::Tensor> ys;
  ys.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    auto kt = k.select(1, t), qt = q.select(1, t), at = alpha.select(1, t);  // [B,D], [B,D], [B,N]
    auto r = torch::tanh(torch::matmul(S, kt.unsqueeze(-1)).squeeze(-1));     // [B,N]
    auto v = torch::tanh(torch::matmul(r, Wr.t()) + wxb.select(1, t));        // [B,N]
    S = at.unsqueeze(-1) * S + ((1 - at) * v).unsqueeze(-1) * kt.unsqueeze(-2);
    ys.push_back(torch::tanh(torch::matmul(S, qt.unsqueeze(-1)).squeeze(-1)));
  }
  return {torch::stack(ys, 1).to(proj.scalar_type()), S};
}

}  // namespace elman::ops
