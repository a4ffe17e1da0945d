// Host launchers of the fused add + RMSNorm / LayerNorm kernels (ops/rms_norm/rms_norm.h has the math).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// residual [..., C] (f32|bf16), y like residual (f32|bf16) or undefined, w [C] (any float dtype), b [C] (any float
// dtype: LayerNorm) or undefined (RMSNorm) -> {r (residual's dtype; undefined without y), n (out_dtype),
// rstd [rows] f32, mean [rows] f32 (LayerNorm; undefined for RMSNorm)}.
std::vector<at::Tensor> add_norm_fwd(const at::Tensor& residual, const at::Tensor& y, const at::Tensor& w,
                                     const at::Tensor& b, double eps, at::ScalarType out_dtype);

// r, rstd and mean (undefined: RMSNorm) from the forward, w, the gradients of r (undefined = zero) and n, and y's
// dtype (Undefined when the forward had no y) -> {dr (r's dtype: residual's gradient), dy (the same values in y's
// dtype, or undefined), dw [C] f32, db [C] f32 (LayerNorm; undefined for RMSNorm)}.
std::vector<at::Tensor> add_norm_bwd(const at::Tensor& r, const at::Tensor& w, const at::Tensor& rstd,
                                     const at::Tensor& mean, const at::Tensor& gr, const at::Tensor& gn,
                                     at::ScalarType y_dtype);

}  // namespace elman::cuda
