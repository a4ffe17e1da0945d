// E61 decay-gated Elman recurrence (spec section 2.5): the pure-LibTorch reference.
//
//   alpha_t = sigmoid(proj_a[t] + b_alpha)          proj_a = proj[..., :D]  (W_alpha x, no bias)
//   v_t     = proj_v[t] + b_v                       proj_v = proj[..., D:]  (W_v x, no bias)
//   h_t     = alpha_t * h_{t-1} + (1 - alpha_t) * v_t
//   y_t     = selfgate(h_t) = h_t^2 * sigmoid(h_t)
//
// Shapes: proj [B,T,2D], b_alpha [D], b_v [D], h0 [B,D] (undefined = zeros).
// Returns {y [B,T,D] in proj's dtype, h_T [B,D] fp32}. Computes in fp32 (fp64 for fp64 inputs, where h_T
// is fp64 too) with an explicit loop over T;
// differentiable through LibTorch autograd with respect to every input.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace elman::ops {

std::vector<torch::Tensor> e61_reference(const torch::Tensor& proj, const torch::Tensor& b_alpha,
                                         const torch::Tensor& b_v, const torch::Tensor& h0);

}  // namespace elman::ops
