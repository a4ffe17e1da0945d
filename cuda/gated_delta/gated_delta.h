// Host launchers of the gated delta rule's state-pass kernels (ops/gated_delta/README.md, "The CUDA kernels").
// The chunk-local quantities come from ops/gated_delta's chunk preparation, laid out per (batch, chunk, head):
//   W [B,nc,H,L,K] = (I + A)^{-1} diag(beta exp(G)) K      Ut [B,nc,H,L,V] = (I + A)^{-1} diag(beta) V
//   Qg [B,nc,H,L,K] = diag(exp(G)) Q                        Kl [B,nc,H,L,K] = diag(exp(G_{L-1} - G)) K
//   P [B,nc,H,L,L] = (Q K^T) o D                            decay [B,nc,H] = exp(G_{L-1}) (fp32)
// and per chunk, from the entering state S [K,V]:
//   U = Ut - W S,   O = Qg S + P U,   S <- decay S + Kl^T U
// (the state pass walks the chunks for U and S; O follows for all chunks at once).
// L = 64, K = 128, V a multiple of 64; W, Ut, Qg, Kl, P share one dtype, float32 or bfloat16 (the operand type:
// bf16 runs the products on tensor cores with fp32 accumulation); all contiguous CUDA tensors.
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// h0 [B,H,K,V] fp32 -> {O [B,nc*L,H,V] operand dtype (the layer's [B,T,H,V] with T padded to whole chunks),
// S_T [B,H,K,V] fp32, states [B,H,nc,K,V] fp32: the state entering each chunk, U [B,nc,H,L,V] operand dtype,
// states_op: the states in the operand dtype (fp32: states itself)}; the last three are for the backward.
std::vector<at::Tensor> gated_delta_state_fwd(const at::Tensor& W, const at::Tensor& Ut, const at::Tensor& Qg,
                                              const at::Tensor& Kl, const at::Tensor& P, const at::Tensor& decay,
                                              const at::Tensor& h0);

// The forward's W, Qg, Kl, P, decay, U, states and states_op, dO [B,nc*L,H,V] (operand dtype, contiguous) and
// dS_T [B,H,K,V] fp32 -> {dW, dUt, dQg, dKl, dP, ddecay, dh0}, all fp32 in the shapes of the forward's inputs.
std::vector<at::Tensor> gated_delta_state_bwd(const at::Tensor& W, const at::Tensor& Qg, const at::Tensor& Kl,
                                              const at::Tensor& P, const at::Tensor& decay, const at::Tensor& U,
                                              const at::Tensor& states, const at::Tensor& states_op,
                                              const at::Tensor& dO, const at::Tensor& dS_T);

}  // namespace elman::cuda
