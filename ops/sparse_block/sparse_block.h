#pragma once
#include <torch/torch.h>

#include <vector>

#include "ops/common/impl.h"
#include "ops/sparse_block/reference.h"

namespace elman::ops {

// E87 sparse block memory over T (written out in reference.h): a router reads all B_k blocks with
// rho = softmax(l) and updates the top K with the renormalised softmax w; per block the gated delta rule
// S_j = (1 - w_j) S_j + w_j tanh(diag(beta) S_j + (v_j - S_j khat) khat^T); y = sum_j rho_j selfgate(S_j q).
//
// Args:
//   proj     [B,T, B_k*3n + n + B_k] float32 or bfloat16: [per block (k | v | b~)] [q] [router logits], from one
//            GEMM by the caller.
//   b_beta   [B_k,n] (any float dtype, used in fp32).
//   S0       [B,B_k,n,n] initial states (any float dtype), or an undefined tensor for zeros.
//   blocks   1 <= B_k <= 32;  top_k  1 <= K <= B_k;  n_state  1 <= n <= 64 (anything else throws, naming
//            --blocks, --topk or --nstate).
//   impl     Impl::Kernel runs the scan on our CUDA kernels (CUDA tensors, a CUDA build); routing and
//            aggregation are LibTorch ops either way. Impl::Reference runs sparse_block_reference. Asking for the
//            kernel where it cannot run throws.
// Returns {y [B,T,n] in proj's dtype, S_T [B,B_k,n,n] float32}, differentiable with respect to proj, b_beta and
// S0 with gradients flowing in from both outputs.
std::vector<torch::Tensor> sparse_block(const torch::Tensor& proj, const torch::Tensor& b_beta, const torch::Tensor& S0,
                                        int64_t blocks, int64_t top_k, int64_t n_state, Impl impl);

// The scan alone (reference.h): scan_proj [B,T,B_k*4n] per block [k | v | q | b~], b_beta [B_k,n], w [B,T,B_k]
// (any values), S0 [B,B_k,n,n] or undefined (zeros) -> {yb [B,T,B_k*n] in scan_proj's dtype, S_T [B,B_k,n,n]
// float32}, differentiable with respect to scan_proj, b_beta, w and S0. The kernel (cuda/sparse_block/) runs
// one block per (batch, memory block) with the state in fp32 registers, fp32 checkpoints every K steps, and a
// backward that recomputes each segment once.
std::vector<torch::Tensor> sparse_block_scan(const torch::Tensor& scan_proj, const torch::Tensor& b_beta,
                                             const torch::Tensor& w, const torch::Tensor& S0, int64_t blocks,
                                             int64_t n_state, Impl impl);

}  // namespace elman::ops
