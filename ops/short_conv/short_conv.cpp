#include "ops/short_conv/short_conv.h"

#ifdef ELMAN_WITH_CUDA
#include "cuda/short_conv/short_conv.h"
#endif

namespace elman::ops {

#ifdef ELMAN_WITH_CUDA
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Autograd's Function::apply rejects undefined tensor arguments, so "no bias" arrives as an empty tensor.
struct ShortConvFunction : public torch::autograd::Function<ShortConvFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               const torch::Tensor& bias_or_empty, bool silu) {
    const auto bias = bias_or_empty.numel() > 0 ? bias_or_empty : torch::Tensor();
    auto y = cuda::short_conv_fwd(x, w, bias, silu);
    // SiLU's input is recomputed in the backward from these, not saved.
    ctx->save_for_backward({x, w, bias_or_empty});
    ctx->saved_data["silu"] = silu;
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &x = s[0], &w = s[1], &bias_or_empty = s[2];
    const bool has_bias = bias_or_empty.numel() > 0;
    auto g = cuda::short_conv_bwd(x, w, has_bias ? bias_or_empty : torch::Tensor(), grads[0],
                                  ctx->saved_data["silu"].toBool());  // {dx, dw [C,1,W] f32, dbias [C] f32}
    return {g[0], g[1].to(w.scalar_type()), has_bias ? g[2].to(bias_or_empty.scalar_type()) : torch::Tensor(),
            torch::Tensor()};
  }
};
}  // namespace
#endif

torch::Tensor short_conv(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias, bool silu,
                         Impl impl) {
  check_short_conv_args(x, w, bias);
  TORCH_CHECK(impl != Impl::Chunked, "short_conv: there is no chunked implementation; pass Impl::Kernel or "
              "Impl::Reference");
  if (impl == Impl::Reference) return short_conv_reference(x, w, bias, silu);
  check_kernel_runs("short_conv", x);
  TORCH_CHECK(x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16,
              "short_conv: the CUDA kernel takes float32 or bfloat16 x, got ", x.scalar_type(),
              "; use --impl reference");
  TORCH_CHECK(w.size(2) <= kShortConvKernelMaxWidth, "short_conv: the CUDA kernel supports widths W <= ",
              kShortConvKernelMaxWidth, ", got ", w.size(2), "; use --impl reference");
#ifdef ELMAN_WITH_CUDA
  // The kernel reads x through its batch and time strides; channels must be adjacent (a copy otherwise).
  const auto xk = x.stride(2) == 1 || x.size(2) == 1 ? x : x.contiguous();
  return ShortConvFunction::apply(xk, w, bias.defined() ? bias : torch::empty({0}, w.options()), silu)[0];
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

}  // namespace elman::ops
