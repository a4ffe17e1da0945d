#include "ops/delta_matrix/reference.h"

namespace elman::ops {

void check_delta_matrix_args(const torch::Tensor& proj, const torch::Tensor& b_beta, const torch::Tensor& S0,
                             int64_t heads, int64_t n_state) {
  TORCH_CHECK(n_state >= 1 && n_state <= kDeltaMatrixMaxNState, "delta_matrix: n_state ", n_state,
              " is not supported; use an n_state from 1 to ", kDeltaMatrixMaxNState, " (--nstate)");
  TORCH_CHECK(heads >= 1, "delta_matrix: heads must be at least 1, got ", heads);
  const int64_t P = b_beta.defined() ? 4 : 3;
  TORCH_CHECK(proj.defined() && proj.dim() == 3, "delta_matrix: proj must be [B,T,H*P*n]");
  TORCH_CHECK(proj.is_floating_point(), "delta_matrix: proj must be floating point, got ", proj.scalar_type());
  TORCH_CHECK(proj.size(0) >= 1 && proj.size(1) >= 1, "delta_matrix: empty input, proj is ", proj.sizes());
  TORCH_CHECK(proj.size(2) == heads * P * n_state, "delta_matrix: proj must be [B,T,", heads * P * n_state,
              "] (heads ", heads, " x ", P, " projections x n_state ", n_state, "), got ", proj.sizes());
  if (b_beta.defined())
    TORCH_CHECK(b_beta.dim() == 2 && b_beta.size(0) == heads && b_beta.size(1) == n_state &&
                    b_beta.is_floating_point(),
                "delta_matrix: b_beta must be a float [", heads, ",", n_state, "], got ", b_beta.sizes());
  if (S0.defined())
    TORCH_CHECK(S0.dim() == 4 && S0.size(0) == proj.size(0) && S0.size(1) == heads && S0.size(2) == n_state &&
                    S0.size(3) == n_state && S0.is_floating_point(),
                "delta_matrix: S0 must be a float [", proj.size(0), ",", heads, ",", n_state, ",", n_state, "], got ",
                S0.sizes());
}

std::vector<torch::Tensor> delta_matrix_reference(const torch::Tensor& proj, const torch::Tensor& b_beta,
                                                  const torch::Tensor& S0, int64_t heads, int64_t n_state) {
  check_delta_matrix_args(proj, b_beta, S0, heads, n_state);
  const int64_t B = proj.size(0), T = proj.size(1), H = heads, n = n_state;
  const bool gated = b_beta.defined();
  const auto ct = proj.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto p = proj.to(ct).view({B, T, H, gated ? 4 : 3, n});
  torch::Tensor beta;
  if (gated) beta = torch::sigmoid(p.select(3, 3) + b_beta.to(ct));  // [B,T,H,n]
  auto S = S0.defined() ? S0.to(ct) : torch::zeros({B, H, n, n}, proj.options().dtype(ct));
  std::vector<torch::Tensor> ys;
  ys.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    auto pt = p.select(1, t);  // [B,H,P,n]
    auto k = pt.select(2, 0), v = pt.select(2, 1), q = pt.select(2, 2);
    auto kh = k / (torch::linalg_vector_norm(k, 2, {-1}, /*keepdim=*/true) + 1e-6);
    auto r = torch::matmul(S, kh.unsqueeze(-1)).squeeze(-1);  // [B,H,n]
    auto decayed = gated ? S * beta.select(1, t).unsqueeze(-1) : S;
    S = torch::tanh(decayed + (v - r).unsqueeze(-1) * kh.unsqueeze(-2));
    auto u = torch::matmul(S, q.unsqueeze(-1)).squeeze(-1);
    ys.push_back((u * u * torch::sigmoid(u)).reshape({B, H * n}));
  }
  return {torch::stack(ys, 1).to(proj.scalar_type()), S};
}

}  // namespace elman::ops
