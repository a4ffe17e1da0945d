#pragma once
#include <torch/torch.h>

#include <vector>

#include "ops/common/impl.h"
#include "ops/gated_diag/cells.h"

namespace elman::ops {

// Gated-diagonal Elman scan over T for one of the cells in cells.h.
//
// Args:
//   cell   which recurrence (cells.h).
//   proj   [B,T,2D] float32 or bfloat16: [a, p] = the two input projections from one GEMM.
//   w      [P,D] per-channel parameters in cells.h order (any float dtype; used in fp32); [0,D] for the
//          E74 cells, which have none.
//   h0     [B,D] initial state, or an undefined tensor for zeros.
//   impl   Impl::Kernel runs our CUDA kernels (CUDA tensors, a CUDA build); Impl::Reference runs
//          gated_diag_reference. Asking for the kernel where it cannot run throws.
// Returns {y [B,T,D] in proj's dtype, h_T [B,D] float32}, differentiable with respect to proj, w and h0,
// with gradients flowing in from both y and h_T.
// The kernel keeps the state in an fp32 register, walks T in one launch per direction, and saves the
// fp32 state history [B,T,D] for the backward pass (full BPTT, fp32 carried gradient).
std::vector<torch::Tensor> gated_diag(DiagCell cell, const torch::Tensor& proj, const torch::Tensor& w,
                                      const torch::Tensor& h0, Impl impl);

}  // namespace elman::ops
