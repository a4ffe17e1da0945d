// The gated-diagonal cells (cells.h) in pure LibTorch: the spec, with an explicit loop over T, computing in
// fp32 (fp64 for fp64 inputs). Differentiable through autograd with respect to every input.
//   proj [B,T,2D] = [a, p], w [P,D] per-channel parameters (cells.h order), h0 [B,D] or undefined (zeros).
// Returns {y [B,T,D] in proj's dtype, h_T [B,D] fp32 (fp64 for fp64 inputs)}.
#pragma once
#include <torch/torch.h>

#include <vector>

#include "ops/gated_diag/cells.h"

namespace elman::ops {

std::vector<torch::Tensor> gated_diag_reference(DiagCell cell, const torch::Tensor& proj, const torch::Tensor& w,
                                                const torch::Tensor& h0);

}  // namespace elman::ops
