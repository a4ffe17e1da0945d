// Host launchers of the SwiGLU gate and self-gate kernels (ops/swiglu/swiglu.h has the math).
#pragma once
#include <ATen/ATen.h>

namespace elman::cuda {

// gu [..., 2h] (f32|bf16, any strides) -> silu(gate) * up [..., h] in gu's dtype.
at::Tensor swiglu_fwd(const at::Tensor& gu);
// gu as given to the forward and the output's gradient (any dtype and strides) -> dgu [..., 2h] in gu's dtype.
at::Tensor swiglu_bwd(const at::Tensor& gu, const at::Tensor& dy);

// x (f32|bf16, any strides) -> x * silu(x) in x's dtype, contiguous.
at::Tensor selfgate_fwd(const at::Tensor& x);
// x as given to the forward and the output's gradient (any dtype and strides) -> dx in x's dtype.
at::Tensor selfgate_bwd(const at::Tensor& x, const at::Tensor& dy);

}  // namespace elman::cuda
