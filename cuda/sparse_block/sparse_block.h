// Host launchers of the E87 sparse-block scan kernels (sparse_block.cuh has the per-step math; the thread layout,
// staging and reductions are delta_matrix's, cuda/delta_matrix/delta_matrix.cuh). Layouts as in
// ops/sparse_block/reference.h: scan_proj [B,T,B_k*4n] with per block [k | v | q | b~], w [B,T,B_k].
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// scan_proj [B,T,B_k*4n] (f32|bf16), b_beta [B_k,n], w [B,T,B_k], S0 [B,B_k,n,n] (any float dtypes) ->
// {yb [B,T,B_k*n] scan_proj dtype, S_T [B,B_k,n,n] f32, ckpt [B*B_k, ceil(T/K), NP, NP] f32: the state at the
//  start of every K-step segment, zero-padded to NP x NP (K and NP as delta_matrix's for n)}
std::vector<at::Tensor> sparse_block_fwd(const at::Tensor& scan_proj, const at::Tensor& b_beta, const at::Tensor& w,
                                         const at::Tensor& S0, int64_t blocks, int64_t n);

// The forward's inputs and ckpt, and the incoming gradients dyb [B,T,B_k*n] and dS_T [B,B_k,n,n] (either may be
// undefined = zero; any dtype and strides) ->
// {dscan_proj [B,T,B_k*4n] scan_proj dtype, db_beta [B_k,n] f32, dw [B,T,B_k] f32, dS0 [B,B_k,n,n] f32}
std::vector<at::Tensor> sparse_block_bwd(const at::Tensor& scan_proj, const at::Tensor& b_beta, const at::Tensor& w,
                                         const at::Tensor& ckpt, const at::Tensor& dyb, const at::Tensor& dS_T,
                                         int64_t blocks, int64_t n);

}  // namespace elman::cuda
