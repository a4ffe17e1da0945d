// Gated RMSNorm, the output norm of Mamba2 and GatedDeltaNet: the pure-LibTorch reference, which is the spec.
// Over the last dim (C values per row), with s = silu(z) = z sigmoid(z):
//
//   GateOrder::GateThenNorm (Mamba2, norm after the gate):   n = rmsnorm(y s) w
//   GateOrder::NormThenGate (GatedDeltaNet, gate after it):  n = rmsnorm(y) w s
//   rmsnorm(u) = u / sqrt(mean(u^2 over the row) + eps)
//
// Layout: y [..., C] and z of y's shape (any strides; GatedDeltaNet passes its per-head view [B,T,H,dv] of the
// output and a view of the gate inside its in_proj output, so each head is a row); w [C].
// Math in fp32 (fp64 for fp64 inputs); returns n [..., C] in out_dtype, differentiable with respect to y, z and w.
#pragma once
#include <torch/torch.h>

namespace elman::ops {

enum class GateOrder { GateThenNorm, NormThenGate };

// Checks shapes and dtypes for both implementations; throws a one-line c10::Error naming the argument.
void check_gated_rms_norm_args(const torch::Tensor& y, const torch::Tensor& z, const torch::Tensor& w,
                               at::ScalarType out_dtype);

torch::Tensor gated_rms_norm_reference(const torch::Tensor& y, const torch::Tensor& z, const torch::Tensor& w,
                                       GateOrder order, double eps, at::ScalarType out_dtype);

}  // namespace elman::ops
