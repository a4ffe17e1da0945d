// Host launchers of the depthwise causal short-convolution kernels (ops/short_conv/reference.h has the math).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// x [B,T,C] (f32|bf16; strides of B and T free, C's stride 1), w [C,1,W] with W <= 4 and bias [C] or undefined
// (any float dtype) -> y [B,T,C] contiguous in x's dtype.
at::Tensor short_conv_fwd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, bool silu);

// x, w, bias as given to short_conv_fwd and y's gradient gy [B,T,C] (any strides and float dtype) ->
// {dx [B,T,C] contiguous in x's dtype, dw [C,1,W] f32, dbias [C] f32 (the sum of the conv's gradient; unused
// without bias)}.
std::vector<at::Tensor> short_conv_bwd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                                       const at::Tensor& gy, bool silu);

}  // namespace elman::cuda
