#pragma once
#include <torch/torch.h>

#include "ops/common/grad_sink.h"
#include "ops/common/impl.h"
#include "ops/short_conv/reference.h"

namespace elman::ops {

// Depthwise causal short convolution with an optional fused SiLU (written out in reference.h):
//   y[b,t,c] = silu(bias[c] + sum_{i<W} w[c,0,i] x[b,t-(W-1)+i,c])
//
// Args:
//   x     [B,T,C] channels last, float32 or bfloat16 (fp64 for tests, reference only); any strides: the kernel reads a
//         narrow of a wider projection in place (channels must be adjacent, stride 1, else x is copied once).
//   w     [C,1,W] (any float dtype, used in fp32);  bias [C] (any float dtype) or undefined for none.
//   silu  apply SiLU to the convolution (the layers do).
//   impl  Impl::Kernel runs our CUDA kernels (cuda/short_conv: CUDA tensors, float32 or bfloat16 x, W <= 4);
//         Impl::Reference runs short_conv_reference. There is no chunked variant: Impl::Chunked throws (a layer
//         that runs its scan chunked passes Impl::Reference here, as the LM's norms do).
// Returns y [B,T,C] in x's dtype (contiguous from the kernel), differentiable with respect to x, w and bias;
// the kernel's gradients come back in each input's dtype, dw and dbias summed over B*T in a fixed order
// (deterministic).
torch::Tensor short_conv(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias, bool silu,
                         Impl impl);

// short_conv with y split along C into pieces of `sizes` (adding up to C): the kernel writes each piece as its own
// contiguous tensor [B,T,sizes[i]] (at most kShortConvKernelMaxPieces pieces, each size a whole number of its vector
// accesses, else narrower ones), so the ops after it read q, k, v (or x, B, C) without a copy, and its backward reads
// their gradients where they are, without a concatenation; the reference returns views of one output.
// dx_slot: the slot of the split piece that x is (ops/common/grad_sink.h), into which the kernel's backward writes
// dx; an undefined slot: dx is allocated.
std::vector<torch::Tensor> short_conv_split(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                                            bool silu, const std::vector<int64_t>& sizes, Impl impl,
                                            const GradSlot& dx_slot = GradSlot());

// The largest convolution width the kernel takes (Mamba2's and GatedDeltaNet's is 4).
constexpr int64_t kShortConvKernelMaxWidth = 4;
// The most pieces short_conv_split's kernel writes y in.
constexpr int64_t kShortConvKernelMaxPieces = 4;

}  // namespace elman::ops
