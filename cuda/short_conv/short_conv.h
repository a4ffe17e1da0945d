// Host launchers of the depthwise causal short-convolution kernels (ops/short_conv/reference.h has the math).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// x [B,T,C] (f32|bf16; strides of B and T free, C's stride 1), w [C,1,W] with W <= 4 and bias [C] or undefined
// (any float dtype), sizes: C split into 1 to 4 pieces -> y's pieces, each [B,T,sizes[i]] contiguous in x's dtype.
std::vector<at::Tensor> short_conv_fwd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, bool silu,
                                       const std::vector<int64_t>& sizes);

// x, w, bias, sizes as given to short_conv_fwd, the gradients of y's pieces gys[i] [B,T,sizes[i]] (any float
// dtype and strides; undefined: zero), and dx_into: undefined, or the [B,T,C] tensor in x's dtype (C's stride 1,
// other strides free) that dx is written into -> {dx [B,T,C] in x's dtype (dx_into, else contiguous), dw [C,1,W]
// f32, dbias [C] f32 (the sum of the conv's gradient; unused without bias)}.
std::vector<at::Tensor> short_conv_bwd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                                       const std::vector<at::Tensor>& gys, const std::vector<int64_t>& sizes, bool silu,
                                       const at::Tensor& dx_into);

}  // namespace elman::cuda
