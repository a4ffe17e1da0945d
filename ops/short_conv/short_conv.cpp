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
                               const torch::Tensor& bias_or_empty, bool silu, const std::vector<int64_t>& sizes,
                               const GradSlot& dx_slot) {
    const auto bias = bias_or_empty.numel() > 0 ? bias_or_empty : torch::Tensor();
    auto ys = cuda::short_conv_fwd(x, w, bias, silu, sizes);
    // SiLU's input is recomputed in the backward from these, not saved.
    ctx->save_for_backward({x, w, bias_or_empty});
    ctx->saved_data["silu"] = silu;
    ctx->saved_data["sizes"] = sizes;
    ctx->saved_data["dx_slot"] = dx_slot.to_ivalue();
    ctx->set_materialize_grads(false);  // a piece without a gradient stays undefined: the kernel reads zeros
    return ys;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &x = s[0], &w = s[1], &bias_or_empty = s[2];
    const bool has_bias = bias_or_empty.numel() > 0;
    const auto dx_into = GradSlot::from_ivalue(ctx->saved_data["dx_slot"]).claim(x.sizes());
    auto g = cuda::short_conv_bwd(x, w, has_bias ? bias_or_empty : torch::Tensor(), grads,
                                  ctx->saved_data["sizes"].toIntVector(), ctx->saved_data["silu"].toBool(),
                                  dx_into);  // {dx, dw [C,1,W] f32, dbias [C] f32}
    return {g[0], g[1].to(w.scalar_type()), has_bias ? g[2].to(bias_or_empty.scalar_type()) : torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace
#endif

std::vector<torch::Tensor> short_conv_split(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                                            bool silu, const std::vector<int64_t>& sizes, Impl impl,
                                            const GradSlot& dx_slot) {
  check_short_conv_args(x, w, bias);
  int64_t total = 0;
  for (int64_t n : sizes) {
    TORCH_CHECK(n > 0, "short_conv: the pieces' sizes must be positive, got ", sizes);
    total += n;
  }
  TORCH_CHECK(total == x.size(2), "short_conv: the pieces' sizes ", sizes, " must add up to C = ", x.size(2));
  dx_slot.check_piece(x, "short_conv");
  TORCH_CHECK(impl != Impl::Chunked, "short_conv: there is no chunked implementation; pass Impl::Kernel or "
              "Impl::Reference");
  if (impl == Impl::Reference) return short_conv_reference(x, w, bias, silu).split_with_sizes(sizes, -1);
  check_kernel_runs("short_conv", x);
  TORCH_CHECK(x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16,
              "short_conv: the CUDA kernel takes float32 or bfloat16 x, got ", x.scalar_type(),
              "; use --impl reference");
  TORCH_CHECK(w.size(2) <= kShortConvKernelMaxWidth, "short_conv: the CUDA kernel supports widths W <= ",
              kShortConvKernelMaxWidth, ", got ", w.size(2), "; use --impl reference");
  TORCH_CHECK(static_cast<int64_t>(sizes.size()) <= kShortConvKernelMaxPieces, "short_conv: the CUDA kernel splits y "
              "into at most ", kShortConvKernelMaxPieces, " pieces, got ", sizes.size());
#ifdef ELMAN_WITH_CUDA
  // The kernel reads x through its batch and time strides; channels must be adjacent (a copy otherwise, whose
  // gradient the copy's backward takes: then dx cannot go into x's slot).
  const bool adjacent = x.stride(2) == 1 || x.size(2) == 1;
  return ShortConvFunction::apply(adjacent ? x : x.contiguous(), w,
                                  bias.defined() ? bias : torch::empty({0}, w.options()), silu, sizes,
                                  adjacent ? dx_slot : GradSlot());
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

torch::Tensor short_conv(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias, bool silu,
                         Impl impl) {
  // (A malformed x gets short_conv_split's own error.)
  return short_conv_split(x, w, bias, silu, {x.defined() && x.dim() == 3 ? x.size(2) : 1}, impl)[0];
}

}  // namespace elman::ops
