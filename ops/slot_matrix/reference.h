// Slot-matrix nonlinear cell (spec 2.8, E63m "matrix nonlinear", variant 'full'): the pure-LibTorch reference,
// which is the spec. N slots of width D: the state S is N x D (rows i = slots, columns j = channels).
//
//   k, q, wx, wa = proj_t's slices                        (D, D, N, N: W_k x, W_q x, W_x x, W_alpha x from the
//                                                          caller's one GEMM)
//   r     = tanh(S_{t-1} k)                                r_i = tanh(sum_j S[i][j] k_j)
//   v     = tanh(W_r r + wx + b)                           (N; W_r mixes the slots)
//   alpha = sigmoid(wa + b_alpha)                          (N)
//   S_t   = diag(alpha) S_{t-1} + diag(1 - alpha) v k^T    S_t[i][j] = alpha_i S[i][j] + (1 - alpha_i) v_i k_j
//   y_t   = tanh(S_t q)                                    (N; no selfgate)
//
// Layout: proj [B,T,2D+2N] = [k | q | wx | wa]; W_r [N,N]; b, b_alpha [N]; S0 [B,N,D] or undefined (zeros).
// Returns {y [B,T,N] in proj's dtype, S_T [B,N,D] fp32 (fp64 for fp64 inputs)}. Computes in fp32 (fp64 for fp64
// inputs) with an explicit loop over T; differentiable through LibTorch autograd with respect to proj, W_r, b,
// b_alpha and S0.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace elman::ops {

// The most slots either implementation takes (the CUDA kernels are instantiated for N = 1..16).
constexpr int64_t kSlotMatrixMaxSlots = 16;

// Checks shapes, dtypes and the supported slot count (1..16) for both implementations; throws a one-line
// c10::Error naming the argument and the fix.
void check_slot_matrix_args(const torch::Tensor& proj, const torch::Tensor& W_r, const torch::Tensor& b,
                            const torch::Tensor& b_alpha, const torch::Tensor& S0, int64_t slots);

// D of proj [B,T,2D+2N] for `slots` = N (the arguments checked first).
int64_t slot_matrix_width(const torch::Tensor& proj, int64_t slots);

std::vector<torch::Tensor> slot_matrix_reference(const torch::Tensor& proj, const torch::Tensor& W_r,
                                                 const torch::Tensor& b, const torch::Tensor& b_alpha,
                                                 const torch::Tensor& S0, int64_t slots);

}  // namespace elman::ops
