#pragma once
#include <torch/torch.h>

#include <vector>

#include "ops/common/impl.h"

namespace elman::ops {

// E61 decay-gated scan over T (spec section 2.5; the recurrence is written out in reference.h).
//
// Args:
//   proj     [B,T,2D] float32 or bfloat16: the input projections [W_alpha x, W_v x] from one GEMM.
//   b_alpha  [D] gate bias, b_v [D] value bias (any float dtype; used in fp32).
//   h0       [B,D] initial state, or an undefined tensor for zeros.
//   impl     Impl::Kernel runs our CUDA kernels (CUDA tensors, a CUDA build); Impl::Reference runs
//            e61_reference. Asking for the kernel where it cannot run throws.
// Returns {y [B,T,D] in proj's dtype, h_T [B,D] float32}. Differentiable with respect to proj,
// b_alpha, b_v and h0, with gradients flowing in from both y and h_T.
// The kernel keeps the state in fp32 registers, walks T in one launch, and saves the fp32 state
// history [B,T,D] for the backward pass.
std::vector<torch::Tensor> e61(const torch::Tensor& proj, const torch::Tensor& b_alpha,
                               const torch::Tensor& b_v, const torch::Tensor& h0, Impl impl);

}  // namespace elman::ops
