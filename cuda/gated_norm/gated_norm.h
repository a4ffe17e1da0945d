// Host launchers of the gated RMSNorm kernels (ops/gated_norm/reference.h has the math).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// y [..., C] and z of y's shape (f32|bf16, any strides; copied only when the rows do not fit the kernel's
// two-level row indexing), w [C] (any float dtype); gate_first: GateThenNorm (Mamba2), else NormThenGate (GDN) ->
// {n [..., C] contiguous in out_dtype (f32|bf16), rstd [rows] f32}.
std::vector<at::Tensor> gated_norm_fwd(const at::Tensor& y, const at::Tensor& z, const at::Tensor& w, bool gate_first,
                                       double eps, at::ScalarType out_dtype);

// y, z, w as given to gated_norm_fwd, its rstd, n's gradient gn (any strides and float dtype) and dz_into:
// undefined, or a tensor of z's shape and dtype that dz is written into (in place when its rows collapse to two
// levels of strides, else through a copy) ->
// {dy (y's dtype, contiguous), dz (z's dtype: dz_into, else contiguous), dw [C] f32}.
std::vector<at::Tensor> gated_norm_bwd(const at::Tensor& y, const at::Tensor& z, const at::Tensor& w,
                                       const at::Tensor& rstd, const at::Tensor& gn, bool gate_first,
                                       const at::Tensor& dz_into);

}  // namespace elman::cuda
