#include "ops/gated_norm/gated_norm.h"

#ifdef ELMAN_WITH_CUDA
#include "cuda/gated_norm/gated_norm.h"
#endif

namespace elman::ops {

#ifdef ELMAN_WITH_CUDA
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct GatedRmsNormFunction : public torch::autograd::Function<GatedRmsNormFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& y, const torch::Tensor& z,
                               const torch::Tensor& w, bool gate_first, double eps, int64_t out_dtype,
                               const GradSlot& dz_slot) {
    auto out = cuda::gated_norm_fwd(y, z, w, gate_first, eps, static_cast<at::ScalarType>(out_dtype));  // {n, rstd}
    ctx->save_for_backward({y, z, w, out[1]});
    ctx->saved_data["gate_first"] = gate_first;
    ctx->saved_data["dz_slot"] = dz_slot.to_ivalue();
    return {out[0]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto dz_into = GradSlot::from_ivalue(ctx->saved_data["dz_slot"]).claim(s[1].sizes());
    auto g = cuda::gated_norm_bwd(s[0], s[1], s[2], s[3], grads[0], ctx->saved_data["gate_first"].toBool(),
                                  dz_into);  // {dy, dz, dw f32}
    return {g[0], g[1], g[2].to(s[2].scalar_type()), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};
}  // namespace
#endif

torch::Tensor gated_rms_norm(const torch::Tensor& y, const torch::Tensor& z, const torch::Tensor& w, GateOrder order,
                             double eps, at::ScalarType out_dtype, Impl impl, const GradSlot& dz_slot) {
  check_gated_rms_norm_args(y, z, w, out_dtype);
  dz_slot.check_piece(z, "gated_rms_norm");
  TORCH_CHECK(impl != Impl::Chunked, "gated_rms_norm: there is no chunked implementation; pass Impl::Kernel or "
              "Impl::Reference");
  if (impl == Impl::Reference) return gated_rms_norm_reference(y, z, w, order, eps, out_dtype);
  check_kernel_runs("gated_rms_norm", y);
  auto check_dtype = [](const char* name, at::ScalarType dt) {
    TORCH_CHECK(dt == torch::kFloat || dt == torch::kBFloat16, "gated_rms_norm: the CUDA kernel takes float32 or "
                "bfloat16 ", name, ", got ", dt, "; use --impl reference");
  };
  check_dtype("y", y.scalar_type()), check_dtype("z", z.scalar_type()), check_dtype("out_dtype", out_dtype);
  TORCH_CHECK(y.size(-1) <= kGatedNormKernelMaxC, "gated_rms_norm: the CUDA kernel takes rows of up to ",
              kGatedNormKernelMaxC, " values, got ", y.size(-1), "; use --impl reference");
#ifdef ELMAN_WITH_CUDA
  return GatedRmsNormFunction::apply(y, z, w, order == GateOrder::GateThenNorm, eps,
                                     static_cast<int64_t>(out_dtype), dz_slot)[0];
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

}  // namespace elman::ops
