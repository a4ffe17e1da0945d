#pragma once
#include <torch/torch.h>

#include <vector>

#include "ops/common/impl.h"
#include "ops/ssd/chunked.h"
#include "ops/ssd/reference.h"

namespace elman::ops {

// The one head shape the CUDA kernel runs (Mamba2's): headdim P and d_state N. Other sizes: Impl::Chunked.
constexpr int64_t kSsdKernelHeadDim = 64, kSsdKernelDState = 128;

// Mamba2's SSD scan over T (the recurrence is written out in reference.h):
//   h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,  y_t = h_t C_t + D x_t   (per head; B, C shared: ngroups 1)
//
// Args:
//   x   [B,T,H,P] float32 or bfloat16 (fp64 for tests);  dt [B,T,H] after softplus;  A [H] (negative);
//   Bm, Cm [B,T,N];  D [H];  h0 [B,H,P,N] or an undefined tensor for zeros.
//   impl  Impl::Reference runs ssd_reference (a loop over T); Impl::Chunked runs ssd_chunked with chunks of
//         kSsdChunk (64) steps; Impl::Kernel runs our CUDA kernels (cuda/ssd; forward and hand-written backward)
//         for P = 64, N = 128 and float32 or bfloat16 x (B and C are converted to x's dtype), and throws a
//         one-line error naming --impl chunked otherwise.
// Returns {y [B,T,H,P] in x's dtype, h_T [B,H,P,N] float32 (fp64 for fp64 inputs)}, differentiable with
// respect to every input with gradients flowing in from both outputs.
std::vector<torch::Tensor> ssd(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
                               const torch::Tensor& Bm, const torch::Tensor& Cm, const torch::Tensor& D,
                               const torch::Tensor& h0, Impl impl);

}  // namespace elman::ops
