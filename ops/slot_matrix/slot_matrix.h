#pragma once
#include <torch/torch.h>

#include <vector>

#include "ops/common/impl.h"
#include "ops/slot_matrix/reference.h"

namespace elman::ops {

// Slot-matrix nonlinear recurrence over T (E63m; written out in reference.h): N slots x D state S,
//   r = tanh(S k), v = tanh(W_r r + wx + b), alpha = sigmoid(wa + b_alpha),
//   S = diag(alpha) S + diag(1 - alpha) v k^T,  y = tanh(S q)
//
// Args:
//   proj     [B,T,2D+2N] float32 or bfloat16: [k | q | W_x x | W_alpha x] from one GEMM by the caller.
//   W_r      [N,N], b [N], b_alpha [N] (any float dtype, used in fp32).
//   S0       [B,N,D] initial state (any float dtype), or an undefined tensor for zeros.
//   slots    N, 1 <= N <= 16 (anything else throws, naming --slots).
//   impl     Impl::Kernel runs our CUDA kernels (CUDA tensors, a CUDA build); Impl::Reference runs
//            slot_matrix_reference. Asking for the kernel where it cannot run throws.
// Returns {y [B,T,N] in proj's dtype, S_T [B,N,D] float32}, differentiable with respect to proj, W_r, b, b_alpha
// and S0 with gradients flowing in from both outputs (either may be unused); gradients come back in each
// input's dtype.
// The kernel (cuda/slot_matrix/) runs one block per batch element with the whole N x D state in fp32 registers
// (each thread holds all N rows of a few columns), saves fp32 checkpoints every 16 steps, and its backward
// recomputes each segment once from its checkpoint and walks it in reverse with an fp32 carried gradient. D is
// limited by the register file: N x D floats twice (state and gradient) per block; beyond it the kernel throws.
// The widest D the CUDA kernel takes for `slots` slots (1280 to 4096: its state and the state's gradient, 2 N D fp32
// values, live in the registers of one block of at most 256 threads).
int64_t slot_matrix_kernel_max_width(int64_t slots);

std::vector<torch::Tensor> slot_matrix(const torch::Tensor& proj, const torch::Tensor& W_r, const torch::Tensor& b,
                                       const torch::Tensor& b_alpha, const torch::Tensor& S0, int64_t slots,
                                       Impl impl);

}  // namespace elman::ops
