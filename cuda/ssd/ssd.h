// Host launchers of the SSD scan kernels (ssd.cuh has the block layout and products, ssd_fwd.cu / ssd_bwd.cu
// the per-chunk math). Layouts as in ops/ssd/reference.h, for headdim P = 64 and d_state N = 128 only.
// Every tensor must be contiguous, on one CUDA device, with 16-byte aligned data (ops/ssd/ssd.cpp prepares them).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// The chunk length the kernels use for operands of this dtype (bf16: 64, fp32: 32); the saved states hold one
// [P,N] state per chunk.
int64_t ssd_kernel_chunk(at::ScalarType dtype);

// x [B,T,H,64] (f32|bf16); dt [B,T,H] f32; A [H] f32; Bm, Cm [B,T,128] x's dtype; D [H] f32;
// h0 [B,H,64,128] f32 or undefined (zeros) ->
// {y [B,T,H,64] x's dtype, h_T [B,H,64,128] f32, states [B,H,nc,64,128] f32: the state entering each chunk of
//  ssd_kernel_chunk steps, nc = ceil(T / chunk)}
std::vector<at::Tensor> ssd_fwd(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& Bm,
                                const at::Tensor& Cm, const at::Tensor& D, const at::Tensor& h0);

// The forward's inputs (h0 is not needed), its states, and the incoming gradients dy [B,T,H,64] in x's dtype and
// dh_T [B,H,64,128] f32 (either may be undefined = zero) ->
// {dx [B,T,H,64] x's dtype, ddt [B,T,H] f32, dA [H] f32, dB [B,T,128] f32, dC [B,T,128] f32, dD [H] f32,
//  dh0 [B,H,64,128] f32}
std::vector<at::Tensor> ssd_bwd(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& Bm,
                                const at::Tensor& Cm, const at::Tensor& D, const at::Tensor& states,
                                const at::Tensor& dy, const at::Tensor& dh_T);

}  // namespace elman::cuda
