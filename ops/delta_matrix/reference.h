// Delta-rule matrix-state cells (spec 2.18 E74 full matrix, 2.20 E75 multi-head): the pure-LibTorch
// reference, which is the spec. Per head h, each with its own n x n state S (rows i, columns j):
//
//   k, v, q (, b~) = the head's slices of proj_t          (n each; the input projections are the caller's GEMM)
//   beta = sigmoid(b~ + b_beta[h])                         (gated, E75; E74 has no gate: beta = 1)
//   khat = k / (||k||_2 + 1e-6)
//   r    = S_{t-1} khat                                    r_i = sum_j S[i][j] khat_j
//   S_t  = tanh(diag(beta) S_{t-1} + (v - r) khat^T)       S_t[i][j] = tanh(beta_i S[i][j] + (v_i - r_i) khat_j)
//   u    = S_t q,  y_t = selfgate(u) = u^2 sigmoid(u)
//
// Layout: proj [B,T,H*P*n] with P = 4 (gated: per head [k | v | q | b~]) or P = 3 (ungated: [k | v | q]);
// b_beta [H,n] (gated) or undefined (ungated); S0 [B,H,n,n] or undefined (zeros).
// Returns {y [B,T,H*n] in proj's dtype (heads concatenated), S_T [B,H,n,n] fp32 (fp64 for fp64 inputs)}.
// Computes in fp32 (fp64 for fp64 inputs) with an explicit loop over T; differentiable through LibTorch
// autograd with respect to proj, b_beta and S0.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace elman::ops {

// The largest state size either implementation takes (the CUDA kernels keep a state of up to 64 x 64).
constexpr int64_t kDeltaMatrixMaxNState = 64;

// Checks shapes, dtypes and the supported n_state (1..64) for both implementations; throws a one-line
// c10::Error naming the argument and the fix.
void check_delta_matrix_args(const torch::Tensor& proj, const torch::Tensor& b_beta, const torch::Tensor& S0,
                             int64_t heads, int64_t n_state);

std::vector<torch::Tensor> delta_matrix_reference(const torch::Tensor& proj, const torch::Tensor& b_beta,
                                                  const torch::Tensor& S0, int64_t heads, int64_t n_state);

}  // namespace elman::ops
