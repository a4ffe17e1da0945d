// Host launchers of the delta-rule matrix-state kernels (delta_matrix.cuh has the thread layout, the
// _fwd.cu / _bwd.cu files the per-step math). Layouts as in ops/delta_matrix/reference.h:
// proj [B,T,H*P*n] with per head [k | v | q | b~] (P = 4, gated) or [k | v | q] (P = 3, ungated).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// proj [B,T,H*P*n] (f32|bf16), b_beta [H,n] (gated; undefined = ungated), S0 [B,H,n,n] (any float dtype) ->
// {y [B,T,H*n] proj dtype, S_T [B,H,n,n] f32, ckpt [B*H, ceil(T/K), NP, NP] f32: the state S_{sK} at the
//  start of every K-step segment s, zero-padded to NP x NP (K and NP depend on n, see delta_matrix.cuh)}
std::vector<at::Tensor> delta_matrix_fwd(const at::Tensor& proj, const at::Tensor& b_beta, const at::Tensor& S0,
                                         int64_t heads, int64_t n);

// proj, b_beta as given to delta_matrix_fwd, its ckpt, and the incoming gradients dy [B,T,H*n] and dS_T
// [B,H,n,n] (either may be undefined = zero; any dtype and strides) ->
// {dproj [B,T,H*P*n] proj dtype, db_beta [H,n] f32 (gated; else undefined), dS0 [B,H,n,n] f32}
std::vector<at::Tensor> delta_matrix_bwd(const at::Tensor& proj, const at::Tensor& b_beta, const at::Tensor& ckpt,
                                         const at::Tensor& dy, const at::Tensor& dS_T, int64_t heads, int64_t n);

}  // namespace elman::cuda
