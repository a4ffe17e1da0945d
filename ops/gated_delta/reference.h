// The gated delta rule (GatedDeltaNet's recurrence): the pure-LibTorch sequential reference, which is the spec.
// Per batch b and head h, with the state S [K,V] (K = key head dim, V = value head dim):
//
//   S'  = exp(g_t) S_{t-1}                           decay, g_t <= 0 (log decay per step and head)
//   u_t = beta_t (v_t - S'^T k_t)                     the delta: what the decayed memory mispredicts for k_t
//   S_t = S' + k_t u_t^T                              i.e. S_t = (I - beta_t k_t k_t^T) exp(g_t) S_{t-1} + beta_t k_t v_t^T
//   o_t = S_t^T q_t
//
// q and k come as the caller gives them (the GatedDeltaNet layer L2-normalises both and scales q by 1/sqrt(K)).
// Layout: q, k [B,T,H,K], v [B,T,H,V], g and beta [B,T,H], h0 [B,H,K,V] or undefined (zeros).
// Returns {o [B,T,H,V] in v's dtype, S_T [B,H,K,V] fp32 (fp64 for fp64 inputs)}.
// Computes in fp32 (fp64 when q is fp64) with an explicit loop over T; differentiable through LibTorch autograd
// with respect to every input.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace elman::ops {

// Checks shapes and dtypes for every implementation; throws a one-line c10::Error naming the argument.
void check_gated_delta_args(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                            const torch::Tensor& g, const torch::Tensor& beta, const torch::Tensor& h0);

std::vector<torch::Tensor> gated_delta_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                                 const torch::Tensor& g, const torch::Tensor& beta,
                                                 const torch::Tensor& h0);

}  // namespace elman::ops
