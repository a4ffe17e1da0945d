#pragma once
#include <torch/torch.h>

#include <vector>

#include "ops/common/impl.h"
#include "ops/delta_matrix/reference.h"

namespace elman::ops {

// Delta-rule matrix-state recurrence over T, H heads of an n x n state each (written out in reference.h):
//   S_t = tanh(diag(beta) S_{t-1} + (v - S_{t-1} khat) khat^T),  y_t = selfgate(S_t q)
// E75 (multi-head) passes b_beta (the gate beta = sigmoid(b~ + b_beta)); E74's full matrix passes none (beta = 1).
//
// Args:
//   proj     [B,T,H*P*n] float32 or bfloat16: per head [k | v | q | b~] (P = 4, with b_beta) or [k | v | q]
//            (P = 3, without), from one GEMM by the caller.
//   b_beta   [H,n] (any float dtype, used in fp32), or an undefined tensor for the ungated cell.
//   S0       [B,H,n,n] initial state (any float dtype), or an undefined tensor for zeros.
//   heads    H >= 1;  n_state  1 <= n <= 64 (anything else throws, naming --nstate).
//   impl     Impl::Kernel runs our CUDA kernels (CUDA tensors, a CUDA build); Impl::Reference runs
//            delta_matrix_reference. Asking for the kernel where it cannot run throws.
// Returns {y [B,T,H*n] in proj's dtype, S_T [B,H,n,n] float32}, differentiable with respect to proj, b_beta
// and S0 with gradients flowing in from both outputs (either may be unused); gradients come back in each
// input's dtype.
// The kernel (cuda/delta_matrix/) runs one block per (batch, head) with the state in fp32 registers, saves fp32
// checkpoints of the state every K steps (K = 16 for n <= 32, 8 for n <= 48, else 6), and its backward
// recomputes each segment once from its checkpoint and walks it in reverse with an fp32 carried gradient.
std::vector<torch::Tensor> delta_matrix(const torch::Tensor& proj, const torch::Tensor& b_beta, const torch::Tensor& S0,
                                        int64_t heads, int64_t n_state, Impl impl);

}  // namespace elman::ops
