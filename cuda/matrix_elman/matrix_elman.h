// Host launchers of the matrix-state Elman kernels E70-E73 (matrix_elman.cuh has the thread layout and the per-step
// math, the _fwd.cu / _bwd.cu files the kernels). Layouts as in ops/matrix_elman/reference.h; `cell` is
// ops::MatrixCell as an int.
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// proj [B,T,P*n] (f32|bf16), w [Pw,n] (any float dtype), S0 [B,n,n] (any float dtype) ->
// {y [B,T,n] proj dtype, S_T [B,n,n] f32, ckpt [B,n,ceil(T/K),NP] f32: row i of the state S_{sK} at the start of
//  every K-step segment s, zero-padded to NP columns (K and NP depend on n, see matrix_elman.cuh)}
std::vector<at::Tensor> matrix_elman_fwd(int cell, const at::Tensor& proj, const at::Tensor& w, const at::Tensor& S0,
                                         int64_t n);

// proj, w as given to matrix_elman_fwd, its ckpt, and the incoming gradients dy [B,T,n] and dS_T [B,n,n] (either
// may be undefined = zero; any dtype and strides) ->
// {dproj [B,T,P*n] proj dtype, dw [Pw,n] f32, dS0 [B,n,n] f32}
std::vector<at::Tensor> matrix_elman_bwd(int cell, const at::Tensor& proj, const at::Tensor& w, const at::Tensor& ckpt,
                                         const at::Tensor& dy, const at::Tensor& dS_T, int64_t n);

}  // namespace elman::cuda
