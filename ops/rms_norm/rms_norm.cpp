#include "ops/rms_norm/rms_norm.h"

#ifdef ELMAN_WITH_CUDA
#include "cuda/rms_norm/rms_norm.h"
#endif

namespace elman::ops {
namespace {
void check_args(const torch::Tensor& residual, const torch::Tensor& y, const torch::Tensor& w, at::ScalarType out) {
  TORCH_CHECK(residual.defined() && residual.dim() >= 1 && residual.size(-1) >= 1,
              "add_rms_norm: residual must have a last dimension of at least 1");
  TORCH_CHECK(at::isFloatingType(residual.scalar_type()), "add_rms_norm: residual must be floating point, got ",
              residual.scalar_type());
  TORCH_CHECK(!y.defined() || y.sizes() == residual.sizes(), "add_rms_norm: y has shape ", y.sizes(),
              " but residual has ", residual.sizes());
  TORCH_CHECK(w.defined() && w.dim() == 1 && w.size(0) == residual.size(-1), "add_rms_norm: w must be [",
              residual.size(-1), "]");
  TORCH_CHECK(at::isFloatingType(out), "add_rms_norm: out_dtype must be floating point");
}
}  // namespace

std::vector<torch::Tensor> add_rms_norm_reference(const torch::Tensor& residual, const torch::Tensor& y,
                                                  const torch::Tensor& w, double eps, at::ScalarType out_dtype) {
  check_args(residual, y, w, out_dtype);
  const auto f = residual.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;  // the math's dtype
  auto r = y.defined() ? (residual.to(f) + y.to(f)).to(residual.scalar_type()) : residual;
  auto rf = r.to(f);
  auto n = rf * torch::rsqrt(rf.square().mean(-1, true) + eps) * w.to(f);
  return {r, n.to(out_dtype)};
}

#ifdef ELMAN_WITH_CUDA
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// With y: outputs {r, n}. Without (y arrives empty): r is residual itself, so the only output is {n}.
struct AddRmsNormFunction : public torch::autograd::Function<AddRmsNormFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& residual, const torch::Tensor& y_or_empty,
                               const torch::Tensor& w, double eps, int64_t out_dtype) {
    const bool add = y_or_empty.numel() > 0;
    auto out = cuda::add_rms_norm_fwd(residual, add ? y_or_empty : torch::Tensor(), w, eps,
                                      static_cast<at::ScalarType>(out_dtype));  // {r or undefined, n, rstd}
    const auto& r = add ? out[0] : residual;
    ctx->save_for_backward({r, w, out[2]});
    ctx->saved_data["add"] = add;
    ctx->saved_data["y_dtype"] = static_cast<int64_t>(y_or_empty.scalar_type());
    ctx->set_materialize_grads(false);
    if (add) return {out[0], out[1]};
    return {out[1]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const bool add = ctx->saved_data["add"].toBool();
    const auto& gn = add ? grads[1] : grads[0];
    const auto gr = add ? grads[0] : torch::Tensor();
    const auto y_dtype =
        add ? static_cast<at::ScalarType>(ctx->saved_data["y_dtype"].toInt()) : at::ScalarType::Undefined;
    auto g = cuda::add_rms_norm_bwd(saved[0], saved[1], saved[2], gr, gn, y_dtype);  // {dr, dy, dw f32}
    return {g[0], g[1], g[2].to(saved[1].scalar_type()), torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace
#endif

std::vector<torch::Tensor> add_rms_norm(const torch::Tensor& residual, const torch::Tensor& y, const torch::Tensor& w,
                                        double eps, at::ScalarType out_dtype, Impl impl) {
  if (impl != Impl::Kernel) return add_rms_norm_reference(residual, y, w, eps, out_dtype);
  check_args(residual, y, w, out_dtype);
  check_kernel_runs("add_rms_norm", residual);
#ifdef ELMAN_WITH_CUDA
  TORCH_CHECK((!y.defined() || y.is_cuda()) && w.is_cuda(), "add_rms_norm: the CUDA kernel needs every input on the GPU");
  const auto ye = y.defined() ? y : torch::empty({0}, residual.options());
  auto out = AddRmsNormFunction::apply(residual, ye, w, eps, static_cast<int64_t>(out_dtype));
  if (y.defined()) return out;
  return {residual, out[0]};
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

}  // namespace elman::ops
