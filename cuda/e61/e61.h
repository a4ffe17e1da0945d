// Host launchers of the E61 kernels (see e61_fwd.cu / e61_bwd.cu for the recurrence and layout).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// proj [B,T,2D] (f32|bf16), b_alpha [D], b_v [D], h0 [B,D] -> {y [B,T,D] proj dtype, h_hist [B,T,D] f32, h_T [B,D] f32}
std::vector<at::Tensor> e61_fwd(const at::Tensor& proj, const at::Tensor& b_alpha, const at::Tensor& b_v,
                                const at::Tensor& h0);

// dy [B,T,D] and dh_T [B,D] may be undefined (zero). -> {dproj [B,T,2D] proj dtype, db_alpha [D], db_v [D], dh0 [B,D]} (f32)
std::vector<at::Tensor> e61_bwd(const at::Tensor& proj, const at::Tensor& b_alpha, const at::Tensor& b_v,
                                const at::Tensor& h0, const at::Tensor& h_hist, const at::Tensor& dy,
                                const at::Tensor& dh_T);

}  // namespace elman::cuda
