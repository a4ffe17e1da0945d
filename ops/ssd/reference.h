// Mamba2's state-space dual (SSD) scan: the pure-LibTorch sequential reference, which is the spec.
// Per batch b and head h (P = headdim, N = d_state, ngroups 1 so B and C are shared by all heads):
//
//   h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t B_t^T          h [P,N], x_t [P], B_t [N], dt_t > 0 (after softplus)
//   y_t = h_t C_t + D_h x_t                                y_t [P], C_t [N]
//
// Layout: x [B,T,H,P], dt [B,T,H], A [H] (negative), Bm and Cm [B,T,N], D [H], h0 [B,H,P,N] or undefined
// (zeros). Returns {y [B,T,H,P] in x's dtype, h_T [B,H,P,N] fp32 (fp64 for fp64 inputs)}.
// Computes in fp32 (fp64 for fp64 inputs) with an explicit loop over T; differentiable through LibTorch
// autograd with respect to every input.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace elman::ops {

// Checks shapes and dtypes for every implementation; throws a one-line c10::Error naming the argument.
void check_ssd_args(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A, const torch::Tensor& Bm,
                    const torch::Tensor& Cm, const torch::Tensor& D, const torch::Tensor& h0);

std::vector<torch::Tensor> ssd_reference(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
                                         const torch::Tensor& Bm, const torch::Tensor& Cm, const torch::Tensor& D,
                                         const torch::Tensor& h0);

}  // namespace elman::ops
