#pragma once
#include <torch/torch.h>

#include "ops/common/grad_sink.h"
#include "ops/common/impl.h"
#include "ops/gated_norm/reference.h"

namespace elman::ops {

// Gated RMSNorm over the last dim (written out in reference.h), s = silu(z):
//   GateOrder::GateThenNorm (Mamba2):        n = rmsnorm(y s) w
//   GateOrder::NormThenGate (GatedDeltaNet): n = rmsnorm(y) w s
//
// Args:
//   y  [..., C] float32 or bfloat16 (fp64 for tests, reference only); z of y's shape, float32 or bfloat16;
//      either may be a strided view (the kernel reads any layout whose rows are contiguous along C and whose
//      leading dims collapse to at most two strides, such as a narrow of a projection viewed per head, in place).
//   w  [C] (any float dtype, used in fp32);  eps (the layers use 1e-5);
//   out_dtype  n's dtype: the layers pass the autocast dtype under autocast, so out_proj reads n without a cast.
//   impl  Impl::Kernel runs our CUDA kernels (cuda/gated_norm: one warp per row, or one block per row for rows of
//         1024-8192; fp32 math, C <= 12288);
//         Impl::Reference runs gated_rms_norm_reference. There is no chunked variant: Impl::Chunked throws.
//   dz_slot  the slot of the split piece that z is (ops/common/grad_sink.h), into which the kernel's backward writes
//         dz; undefined (the default): dz is allocated.
// Returns n [..., C] (contiguous from the kernel) in out_dtype, differentiable with respect to y, z and w (the
// kernel's gradients in each input's dtype; dw summed over the rows in a fixed order, deterministic).
torch::Tensor gated_rms_norm(const torch::Tensor& y, const torch::Tensor& z, const torch::Tensor& w, GateOrder order,
                             double eps, at::ScalarType out_dtype, Impl impl, const GradSlot& dz_slot = GradSlot());

// The longest row the kernel takes (its backward keeps per-warp dw rows in 48 KB of shared memory).
constexpr int64_t kGatedNormKernelMaxC = 12288;

}  // namespace elman::ops
