#pragma once
#include <torch/torch.h>

#include <vector>

#include "ops/common/impl.h"
#include "ops/matrix_elman/cells.h"
#include "ops/matrix_elman/reference.h"

namespace elman::ops {

// Matrix-state Elman recurrence over T for one of the cells E70-E73 (cells.h; written out in reference.h):
// an n x n state per batch element, output y_t = selfgate(S_t q_t).
//
// Args:
//   cell     which recurrence (cells.h).
//   proj     [B,T,P*n] float32 or bfloat16: [k | v | q] (E70, P = 3) or [k | v | q | a or z~] (P = 4), from one
//            GEMM by the caller.
//   w        [Pw,n] per-row parameters in cells.h order (any float dtype; used in fp32).
//   S0       [B,n,n] initial state (any float dtype), or an undefined tensor for zeros.
//   n_state  1 <= n <= 128 (anything else throws, naming --nstate).
//   impl     Impl::Kernel runs our CUDA kernels (CUDA tensors, a CUDA build); Impl::Reference runs
//            matrix_elman_reference. Asking for the kernel where it cannot run throws.
// Returns {y [B,T,n] in proj's dtype, S_T [B,n,n] float32}, differentiable with respect to proj, w and S0 with
// gradients flowing in from both outputs (either may be unused); gradients come back in each input's dtype.
// The kernel (cuda/matrix_elman/) gives each state row its own warp (rows evolve independently), keeps the row in
// fp32 registers for all T, saves fp32 checkpoints every K steps, and its backward recomputes each segment once
// from its checkpoint and walks it in reverse with an fp32 carried gradient. Its gradients of k, q (and z~), which
// sum over rows, are accumulated with atomics, so they are not bitwise repeatable (design: README.md).
std::vector<torch::Tensor> matrix_elman(MatrixCell cell, const torch::Tensor& proj, const torch::Tensor& w,
                                        const torch::Tensor& S0, int64_t n_state, Impl impl);

}  // namespace elman::ops
