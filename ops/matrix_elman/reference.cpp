#include "ops/matrix_elman/reference.h"

namespace elman::ops {

void check_matrix_elman_args(MatrixCell cell, const torch::Tensor& proj, const torch::Tensor& w,
                             const torch::Tensor& S0, int64_t n_state) {
  const auto& info = matrix_cell_info(cell);
  TORCH_CHECK(n_state >= 1 && n_state <= kMatrixElmanMaxNState, info.name, ": n_state ", n_state,
              " is not supported; use an n_state from 1 to ", kMatrixElmanMaxNState, " (--nstate)");
  const int64_t P = info.projections, Pw = static_cast<int64_t>(info.params.size());
  TORCH_CHECK(proj.defined() && proj.dim() == 3, info.name, ": proj must be [B,T,", P * n_state, "]");
  TORCH_CHECK(proj.is_floating_point(), info.name, ": proj must be floating point, got ", proj.scalar_type());
  TORCH_CHECK(proj.size(0) >= 1 && proj.size(1) >= 1, info.name, ": empty input, proj is ", proj.sizes());
  TORCH_CHECK(proj.size(2) == P * n_state, info.name, ": proj must be [B,T,", P * n_state, "] (", P,
              " projections x n_state ", n_state, "), got ", proj.sizes());
  TORCH_CHECK(w.defined() && w.dim() == 2 && w.size(0) == Pw && w.size(1) == n_state && w.is_floating_point(),
              info.name, ": w must be a float [", Pw, ",", n_state, "] (per-row parameters), got ",
              w.defined() ? w.sizes() : torch::IntArrayRef{});
  if (S0.defined())
    TORCH_CHECK(S0.dim() == 3 && S0.size(0) == proj.size(0) && S0.size(1) == n_state && S0.size(2) == n_state &&
                    S0.is_floating_point(),
                info.name, ": S0 must be a float [", proj.size(0), ",", n_state, ",", n_state, "], got ", S0.sizes());
}

std::vector<torch::Tensor> matrix_elman_reference(MatrixCell cell, const torch::Tensor& proj, const torch::Tensor& w_in,
                                                  const torch::Tensor& S0, int64_t n_state) {
  check_matrix_elman_args(cell, proj, w_in, S0, n_state);
  const int64_t B = proj.size(0), T = proj.size(1), n = n_state, P = matrix_cell_info(cell).projections;
  const auto ct = proj.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto p = proj.to(ct).view({B, T, P, n});
  auto w = w_in.to(ct);
  auto S = S0.defined() ? S0.to(ct) : torch::zeros({B, n, n}, proj.options().dtype(ct));
  // M x and a b^T for a batch of matrices and vectors.
  auto row_dot = [](const torch::Tensor& M, const torch::Tensor& x) { return (M * x.unsqueeze(1)).sum(-1); };
  auto outer = [](const torch::Tensor& a, const torch::Tensor& b) { return a.unsqueeze(-1) * b.unsqueeze(1); };
  torch::Tensor lambda;
  if (cell == MatrixCell::E70) lambda = torch::clamp(w[0], 0.0, kE70MaxDecay).unsqueeze(-1);  // [n,1]
  std::vector<torch::Tensor> ys;
  ys.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    auto pt = p.select(1, t);  // [B,P,n]
    auto k = pt.select(1, 0), v = pt.select(1, 1), q = pt.select(1, 2);
    switch (cell) {
      case MatrixCell::E70: S = lambda * S + outer(v, k); break;
      case MatrixCell::E71: {
        auto alpha = torch::sigmoid(pt.select(1, 3) + w[1] * row_dot(S, k) + w[0]);
        S = alpha.unsqueeze(-1) * S + outer((1 - alpha) * v, k);
        break;
      }
      case MatrixCell::E72: {
        auto alpha = torch::sigmoid(pt.select(1, 3) + w[0]);
        auto g = torch::sigmoid(w[1] * row_dot(S, k) + w[2]);
        S = alpha.unsqueeze(-1) * S + outer((1 - alpha) * v * g, k);
        break;
      }
      case MatrixCell::E73: {
        auto z = torch::tanh(pt.select(1, 3) + w[0]);
        S = torch::tanh(S * z.unsqueeze(1) + outer(v, k));
        break;
      }
    }
    auto u = row_dot(S, q);
    ys.push_back(u * u * torch::sigmoid(u));
  }
  return {torch::stack(ys, 1).to(proj.scalar_type()), S};
}

}  // namespace elman::ops
