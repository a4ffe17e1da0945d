// Matrix-state Elman cells E70-E73 (cells.h): the pure-LibTorch reference, which is the spec. Per batch an
// n x n state S, per step t (rows i, columns j):
//
//   k, v, q (, a | z~) = the slices of proj_t                   (n each; the caller's one GEMM)
//   E70  S_ij = lambda_i S_ij + v_i k_j                         lambda = clamp(w[0], 0, 0.999)
//   E71  r_i = sum_j S_ij k_j, alpha_i = sigmoid(a_i + w[1]_i r_i + w[0]_i),
//        S_ij = alpha_i S_ij + (1 - alpha_i) v_i k_j
//   E72  alpha_i = sigmoid(a_i + w[0]_i), r_i = sum_j S_ij k_j, g_i = sigmoid(w[1]_i r_i + w[2]_i),
//        S_ij = alpha_i S_ij + (1 - alpha_i) v_i g_i k_j
//   E73  z_j = tanh(z~_j + w[0]_j), S_ij = tanh(S_ij z_j + v_i k_j)
//   u_i = sum_j S_ij q_j,  y_i = u_i^2 sigmoid(u_i)
//
// Layout: proj [B,T,P*n] = [k | v | q (| a or z~)] (P = 3 for E70, else 4); w [Pw,n] in cells.h order; S0 [B,n,n]
// or undefined (zeros). Returns {y [B,T,n] in proj's dtype, S_T [B,n,n] fp32 (fp64 for fp64 inputs)}.
// Computes in fp32 (fp64 for fp64 inputs) with an explicit loop over T and no matmul (elementwise products and
// sums, which autocast leaves in fp32); differentiable through autograd with respect to proj, w and S0.
#pragma once
#include <torch/torch.h>

#include <vector>

#include "ops/matrix_elman/cells.h"

namespace elman::ops {

// The largest state size either implementation takes (the CUDA kernels hold a row of up to 128 in a warp).
constexpr int64_t kMatrixElmanMaxNState = 128;

// Checks shapes, dtypes and the supported n_state (1..128) for both implementations; throws a one-line
// c10::Error naming the argument and the fix.
void check_matrix_elman_args(MatrixCell cell, const torch::Tensor& proj, const torch::Tensor& w,
                             const torch::Tensor& S0, int64_t n_state);

std::vector<torch::Tensor> matrix_elman_reference(MatrixCell cell, const torch::Tensor& proj, const torch::Tensor& w,
                                                  const torch::Tensor& S0, int64_t n_state);

}  // namespace elman::ops
