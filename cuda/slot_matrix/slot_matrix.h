// Host launchers of the slot-matrix (E63m) kernels (slot_matrix.cuh has the thread layout and the shared step
// code, the _fwd.cu / _bwd.cu files the launches). Layouts as in ops/slot_matrix/reference.h:
// proj [B,T,2D+2N] = [k | q | W_x x | W_alpha x].
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// proj [B,T,2D+2N] (f32|bf16), W_r [N,N], b [N], b_alpha [N], S0 [B,N,D] (any float dtypes) ->
// {y [B,T,N] proj dtype, S_T [B,N,D] f32, ckpt [B, ceil(T/K), N, D] f32: the state at the start of every
//  K-step segment (K = 16)}
std::vector<at::Tensor> slot_matrix_fwd(const at::Tensor& proj, const at::Tensor& W_r, const at::Tensor& b,
                                        const at::Tensor& b_alpha, const at::Tensor& S0, int64_t slots);

// The forward's inputs and ckpt, and the incoming gradients dy [B,T,N] and dS_T [B,N,D] (either may be
// undefined = zero; any dtype and strides) ->
// {dproj [B,T,2D+2N] proj dtype, dW_r [N,N] f32, db [N] f32, db_alpha [N] f32, dS0 [B,N,D] f32}
std::vector<at::Tensor> slot_matrix_bwd(const at::Tensor& proj, const at::Tensor& W_r, const at::Tensor& b,
                                        const at::Tensor& b_alpha, const at::Tensor& ckpt, const at::Tensor& dy,
                                        const at::Tensor& dS_T, int64_t slots);

}  // namespace elman::cuda
