#pragma once
#include <torch/torch.h>

#include <vector>

#include "ops/common/impl.h"
#include "ops/gated_delta/chunked.h"
#include "ops/gated_delta/reference.h"

namespace elman::ops {

// The gated delta rule over T (GatedDeltaNet; the recurrence is written out in reference.h):
//   S_t = exp(g_t) S_{t-1} + k_t u_t^T,  u_t = beta_t (v_t - (exp(g_t) S_{t-1})^T k_t),  o_t = S_t^T q_t  (per head)
//
// Args:
//   q, k  [B,T,H,K] float32 or bfloat16 (fp64 for tests), as the recurrence reads them (the layer L2-normalises
//         them and scales q);  v [B,T,H,V];  g [B,T,H] log decay (<= 0);  beta [B,T,H] write strength in (0, 1);
//   h0    [B,H,K,V] or an undefined tensor for zeros.
//   impl  Impl::Reference runs gated_delta_reference (a loop over T); Impl::Chunked runs gated_delta_chunked with
//         chunks of kGatedDeltaChunk (64) steps; Impl::Kernel runs our CUDA kernels (cuda/gated_delta, hand-written
//         backwards): the chunk preparation (gated_delta_chunk_prep_kernel below), then the state pass over the
//         chunks: CUDA tensors, float32 or bfloat16, key head dim K = 128 and V a multiple of 64, else a one-line
//         error naming --impl chunked. Its operands are bf16 (tensor cores, fp32 accumulation) when any of q, k, v
//         is bf16, else fp32.
//   qk_l2norm  q and k are GatedDeltaNet's raw q, k, L2-normalised here before the recurrence reads them:
//         q <- q / sqrt(|q|^2 + kQkL2NormEps) / sqrt(K), k <- k / sqrt(|k|^2 + kQkL2NormEps) per (b, t, h) row, in fp32
//         (qk_l2norm_reference); the kernel forms them inside its chunk preparation, forward and backward, instead of
//         in separate passes over q and k.
// Returns {o [B,T,H,V] in v's dtype, S_T [B,H,K,V] float32 (fp64 for fp64 inputs)}, differentiable with respect
// to every input with gradients flowing in from both outputs.
std::vector<torch::Tensor> gated_delta(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const torch::Tensor& g, const torch::Tensor& beta, const torch::Tensor& h0,
                                       Impl impl, bool qk_l2norm = false);

// qk_l2norm's normalisation in LibTorch: x / sqrt(|x|^2 + kQkL2NormEps) over the last dim in fp32 (fp64 stays fp64),
// also divided by sqrt(K) for q (is_q).
torch::Tensor qk_l2norm_reference(const torch::Tensor& x, bool is_q);
constexpr double kQkL2NormEps = 1e-6;

// The kernel path's chunk preparation alone (for the tests): gated_delta_chunk_prep's quantities at chunks of
// kGatedDeltaChunk steps, computed by our CUDA kernels (cuda/gated_delta/gated_delta_prep_*) with a hand-written
// backward to q, k, v, g, beta. Same requirements as Impl::Kernel above (q, k, v may be strided); the products'
// operands are bf16 when any of q, k, v is bf16, else fp32, and W, Ut, Qg, Kl, P come in that operand type (the
// state pass multiplies them as they are), decay in float32.
GatedDeltaChunks gated_delta_chunk_prep_kernel(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                               const torch::Tensor& g, const torch::Tensor& beta);

}  // namespace elman::ops
