// Depthwise causal short convolution with an optional fused SiLU (Mamba2's conv on [x | B | C], GatedDeltaNet's
// on [q | k | v]): the pure-LibTorch reference, which is the spec. Per batch b, step t and channel c:
//
//   a[b,t,c] = bias[c] + sum_{i=0}^{W-1} w[c,0,i] x[b, t-(W-1)+i, c]      (x at negative times is 0)
//   y[b,t,c] = silu(a[b,t,c])   (or a itself without the SiLU)
//
// Layout: x [B,T,C] channels last (any strides: the layers pass a narrow of their in_proj output); w [C,1,W]
// (torch's depthwise Conv1d weight, so checkpoints keep their layout); bias [C] or undefined (no bias).
// The reference is the layers' former code: torch::conv1d on x transposed to [B,C,T] with W-1 steps of padding
// (first T outputs kept), groups C, then torch::silu, with w and bias cast to x's dtype (a no-op under autocast,
// which casts them anyway). Returns y [B,T,C] in x's dtype, differentiable with respect to x, w and bias.
#pragma once
#include <torch/torch.h>

namespace elman::ops {

// Checks shapes and dtypes for both implementations; throws a one-line c10::Error naming the argument.
void check_short_conv_args(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias);

torch::Tensor short_conv_reference(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                                   bool silu);

}  // namespace elman::ops
