#include "ops/gated_norm/reference.h"

namespace elman::ops {

void check_gated_rms_norm_args(const torch::Tensor& y, const torch::Tensor& z, const torch::Tensor& w,
                               at::ScalarType out_dtype) {
  TORCH_CHECK(y.defined() && y.dim() >= 1 && y.size(-1) >= 1,
              "gated_rms_norm: y must have a last dimension of at least 1");
  TORCH_CHECK(z.defined() && z.sizes() == y.sizes(), "gated_rms_norm: z must have y's shape ", y.sizes(), ", got ",
              z.defined() ? z.sizes() : at::IntArrayRef{});
  TORCH_CHECK(at::isFloatingType(y.scalar_type()) && at::isFloatingType(z.scalar_type()),
              "gated_rms_norm: y and z must be floating point, got ", y.scalar_type(), " and ", z.scalar_type());
  TORCH_CHECK(w.defined() && w.dim() == 1 && w.size(0) == y.size(-1) && at::isFloatingType(w.scalar_type()),
              "gated_rms_norm: w must be a floating-point [", y.size(-1), "]");
  TORCH_CHECK(z.device() == y.device() && w.device() == y.device(), "gated_rms_norm: y, z and w must be on one device");
  TORCH_CHECK(at::isFloatingType(out_dtype), "gated_rms_norm: out_dtype must be floating point, got ", out_dtype);
}

torch::Tensor gated_rms_norm_reference(const torch::Tensor& y, const torch::Tensor& z, const torch::Tensor& w,
                                       GateOrder order, double eps, at::ScalarType out_dtype) {
  check_gated_rms_norm_args(y, z, w, out_dtype);
  const auto f = y.scalar_type() == torch::kDouble || z.scalar_type() == torch::kDouble ? torch::kDouble
                                                                                          : torch::kFloat;
  const auto yf = y.to(f), s = torch::silu(z.to(f)), wf = w.to(f);
  const auto u = order == GateOrder::GateThenNorm ? yf * s : yf;
  auto n = u * torch::rsqrt(u.square().mean(-1, true) + eps) * wf;
  if (order == GateOrder::NormThenGate) n = n * s;
  return n.to(out_dtype);
}

}  // namespace elman::ops
