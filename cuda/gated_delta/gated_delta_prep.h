// Host launchers of the gated delta rule's chunk preparation kernels (ops/gated_delta/README.md, "The CUDA
// kernels"): the chunk-local quantities that the state pass (gated_delta.h) consumes, and their backward.
//
// Per (batch b, chunk c of L = 64 steps, head h), with the last chunk padded by g = 0, beta = 0, q = k = v = 0,
// G_i = sum_{k<=i} g_k, seg[i][j] = sum_{j<k<=i} g_k (a segment sum, never G_i - G_j), D_ij = exp(seg[i][j]) for
// j <= i and exactly 0 above the diagonal:
//   A = strictly-lower(diag(beta) (K K^T) o D),   T = (I + A)^{-1}   (unit lower triangular, forward substitution)
//   W  = T diag(beta exp(G)) K  [L,K]      Ut = T diag(beta) V  [L,V]       P = (Q K^T) o D  [L,L]
//   Qg = diag(exp(G)) Q  [L,K]             Kl = diag(exp(seg[L-1][.])) K  [L,K]      decay = exp(G_{L-1})
// the quantities of ops::gated_delta_chunk_prep, in the same [B,nc,H,L,*] layout.
//
// Inputs: q, k [B,T,H,128], v [B,T,H,V] (V a multiple of 64), each float32 or bfloat16 with any strides; g, beta
// [B,T,H] float32 contiguous; all CUDA. `bf16` picks the operand type of the matrix products: bf16 (tensor cores,
// operands rounded to bf16, fp32 accumulation) or fp32 (CUDA-core FMAs). Everything else is fp32.
// qk_l2norm: Q and K above are GatedDeltaNet's L2-normalised q, k, formed here per row in fp32:
// q^ = q / sqrt(|q|^2 + 1e-6) / sqrt(128), k^ = k / sqrt(|k|^2 + 1e-6); the backward returns q's and k's gradients.
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// -> {W, Ut, Qg, Kl, P (the operand type, what the state pass multiplies), decay (float32), T [B,nc,H,L,L] (the
// operand type; saved for the backward)}.
std::vector<at::Tensor> gated_delta_prep_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& g, const at::Tensor& beta, bool bf16, bool qk_l2norm);

// The forward's inputs and T, and the gradients of its six outputs (float32 contiguous, shapes of the outputs)
// -> {dq, dk, dv (q's, k's, v's dtypes, contiguous), dg, dbeta (float32)}. One block per (b, c, h) writes its
// rows of every gradient: no atomics, deterministic.
std::vector<at::Tensor> gated_delta_prep_bwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& g, const at::Tensor& beta, const at::Tensor& T,
                                             const at::Tensor& dW, const at::Tensor& dUt, const at::Tensor& dQg,
                                             const at::Tensor& dKl, const at::Tensor& dP, const at::Tensor& ddecay,
                                             bool qk_l2norm);

}  // namespace elman::cuda
