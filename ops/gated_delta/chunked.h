// The gated delta rule by the chunked WY (UT-transform) algorithm, in LibTorch (batched matmuls, a triangular
// solve; autograd for the backward). It is the testable spec of the chunked math the CUDA kernels are to follow,
// and an explicit implementation choice (--impl chunked), never a silent stand-in for the kernel.
//
// With chunks of L steps (the last one padded with g = 0, beta = 0, q = k = v = 0, which leaves the state
// unchanged), per chunk c and head h, S the state entering the chunk, G_i = sum_{k <= i} g_k (inclusive,
// within the chunk) and the decay mask D_ij = exp(G_i - G_j) for j <= i, else 0:
//   A    = strictly-lower(diag(beta) (K K^T) o D)                                [L,L]
//   W    = (I + A)^{-1} diag(beta exp(G)) K,   U~ = (I + A)^{-1} diag(beta) V      [L,K], [L,V]
//   U    = U~ - W S                            (the chunk's deltas u_i, now that S is known)
//   O    = diag(exp(G)) Q S + ((Q K^T) o D) U                                     [L,V]
//   S   <- exp(G_{L-1}) S + K^T diag(exp(G_{L-1} - G)) U                           (the state leaving the chunk)
// A, W, U~ and (Q K^T) o D are formed for all chunks at once; the state passes through a loop over the T / L
// chunks. D comes from segment sums sum_{j < k <= i} g_k (a masked cumsum over the [L,L] tile), not from
// differences of G, as in ops/ssd. Every exponent is <= 0 (g <= 0), so nothing overflows. Same arguments,
// layout, dtypes and results as gated_delta_reference; `chunk` >= 1 is L.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace elman::ops {

constexpr int64_t kGatedDeltaChunk = 64;  // the chunk length of the chunked implementations

// The chunk-local quantities of the algorithm above for all chunks at once (autograd-differentiable), laid out
// [B,nc,H,L,...] with nc = ceil(T / L): W [..,L,K], Ut = (I + A)^{-1} diag(beta) V [..,L,V], Qg = diag(exp(G)) Q
// [..,L,K], Kl = diag(exp(G_{L-1} - G)) K [..,L,K], P = (Q K^T) o D [..,L,L] and decay = exp(G_{L-1}) [B,nc,H],
// in fp32 (fp64 for fp64 inputs; under autocast the matmuls' results are bf16). The state pass over the chunks
// (U = Ut - W S, O = Qg S + P U, S <- decay S + Kl^T U) is gated_delta_chunked's loop or the CUDA kernel's.
struct GatedDeltaChunks {
  torch::Tensor W, Ut, Qg, Kl, P, decay;
};
GatedDeltaChunks gated_delta_chunk_prep(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                        const torch::Tensor& g, const torch::Tensor& beta, int64_t chunk);

std::vector<torch::Tensor> gated_delta_chunked(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                               const torch::Tensor& g, const torch::Tensor& beta,
                                               const torch::Tensor& h0, int64_t chunk = kGatedDeltaChunk);

}  // namespace elman::ops
