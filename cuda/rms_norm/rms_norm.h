// Host launchers of the fused add + RMSNorm kernels (ops/rms_norm/rms_norm.h has the math).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// residual [..., C] (f32|bf16), y like residual (f32|bf16) or undefined, w [C] (any float dtype) ->
// {r (residual's dtype; undefined without y), n (out_dtype), rstd [rows] f32}.
std::vector<at::Tensor> add_rms_norm_fwd(const at::Tensor& residual, const at::Tensor& y, const at::Tensor& w,
                                         double eps, at::ScalarType out_dtype);

// r and rstd from the forward, w, and the gradients of r (undefined = zero) and n ->
// {dr (r's dtype; the gradient of residual and of y), dw [C] f32}.
std::vector<at::Tensor> add_rms_norm_bwd(const at::Tensor& r, const at::Tensor& w, const at::Tensor& rstd,
                                         const at::Tensor& gr, const at::Tensor& gn);

}  // namespace elman::cuda
