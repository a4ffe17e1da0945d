// Host launchers of the gated-diagonal kernels (cell = ops::DiagCell as int; layouts in gated_diag_fwd.cu).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// proj [B,T,2D] (f32|bf16), w [P,D], h0 [B,D] -> {y [B,T,D] proj dtype, h_hist [B,T,D] f32, h_T [B,D] f32}
std::vector<at::Tensor> gated_diag_fwd(int cell, const at::Tensor& proj, const at::Tensor& w, const at::Tensor& h0);

// dy [B,T,D] and dh_T [B,D] may be undefined (zero). -> {dproj [B,T,2D] proj dtype, dw [P,D] f32, dh0 [B,D] f32}
std::vector<at::Tensor> gated_diag_bwd(int cell, const at::Tensor& proj, const at::Tensor& w, const at::Tensor& h0,
                                       const at::Tensor& h_hist, const at::Tensor& dy, const at::Tensor& dh_T);

}  // namespace elman::cuda
