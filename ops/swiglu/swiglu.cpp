#include "ops/swiglu/swiglu.h"

#ifdef ELMAN_WITH_CUDA
#include "cuda/swiglu/swiglu.h"
#endif

namespace elman::ops {
namespace {
void check_args(const torch::Tensor& gu) {
  TORCH_CHECK(gu.defined() && gu.dim() >= 1 && gu.size(-1) % 2 == 0 && gu.size(-1) >= 2,
              "swiglu: the last dimension must be [gate | up], an even size of at least 2");
  TORCH_CHECK(at::isFloatingType(gu.scalar_type()), "swiglu: gu must be floating point, got ", gu.scalar_type());
}

void check_selfgate_args(const torch::Tensor& x) {
  TORCH_CHECK(x.defined() && at::isFloatingType(x.scalar_type()), "selfgate: x must be a floating-point tensor");
}

// fp32 for the math, or fp64 for gradient checks.
torch::Tensor compute_precision(const torch::Tensor& x) {
  return x.to(x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat);
}
}  // namespace

torch::Tensor swiglu_reference(const torch::Tensor& gu) {
  check_args(gu);
  auto halves = compute_precision(gu).chunk(2, -1);
  return (torch::silu(halves[0]) * halves[1]).to(gu.scalar_type());
}

torch::Tensor selfgate_reference(const torch::Tensor& x) {
  check_selfgate_args(x);
  auto f = compute_precision(x);
  return (f * torch::silu(f)).to(x.scalar_type());
}

#ifdef ELMAN_WITH_CUDA
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct SwigluFunction : public torch::autograd::Function<SwigluFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& gu) {
    ctx->save_for_backward({gu});
    return cuda::swiglu_fwd(gu);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {cuda::swiglu_bwd(ctx->get_saved_variables()[0], grads[0])};
  }
};

struct SelfgateFunction : public torch::autograd::Function<SelfgateFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x) {
    ctx->save_for_backward({x});
    return cuda::selfgate_fwd(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {cuda::selfgate_bwd(ctx->get_saved_variables()[0], grads[0])};
  }
};
}  // namespace
#endif

torch::Tensor swiglu(const torch::Tensor& gu, Impl impl) {
  if (impl != Impl::Kernel) return swiglu_reference(gu);
  check_args(gu);
  check_kernel_runs("swiglu", gu);
#ifdef ELMAN_WITH_CUDA
  return SwigluFunction::apply(gu);
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

torch::Tensor selfgate(const torch::Tensor& x, Impl impl) {
  if (impl != Impl::Kernel) return selfgate_reference(x);
  check_selfgate_args(x);
  check_kernel_runs("selfgate", x);
#ifdef ELMAN_WITH_CUDA
  return SelfgateFunction::apply(x);
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

}  // namespace elman::ops
