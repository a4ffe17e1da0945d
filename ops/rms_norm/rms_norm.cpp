#include "ops/rms_norm/rms_norm.h"

#ifdef ELMAN_WITH_CUDA
#include "cuda/rms_norm/rms_norm.h"
#endif

namespace elman::ops {
namespace {
// b undefined: RMSNorm (add_rms_norm), else LayerNorm (add_layer_norm).
const char* op_name(const torch::Tensor& b) { return b.defined() ? "add_layer_norm" : "add_rms_norm"; }

void check_args(const torch::Tensor& residual, const torch::Tensor& y, const torch::Tensor& w, const torch::Tensor& b,
                at::ScalarType out) {
  const char* op = op_name(b);
  TORCH_CHECK(residual.defined() && residual.dim() >= 1 && residual.size(-1) >= 1, op,
              ": residual must have a last dimension of at least 1");
  TORCH_CHECK(at::isFloatingType(residual.scalar_type()), op, ": residual must be floating point, got ",
              residual.scalar_type());
  TORCH_CHECK(!y.defined() || y.sizes() == residual.sizes(), op, ": y has shape ", y.sizes(), " but residual has ",
              residual.sizes());
  TORCH_CHECK(w.defined() && w.dim() == 1 && w.size(0) == residual.size(-1), op, ": w must be [", residual.size(-1),
              "]");
  TORCH_CHECK(!b.defined() || (b.dim() == 1 && b.size(0) == residual.size(-1)), op, ": b must be [",
              residual.size(-1), "]");
  TORCH_CHECK(at::isFloatingType(out), op, ": out_dtype must be floating point");
}

// add_layer_norm's b is required (undefined would silently mean RMSNorm).
void require_bias(const torch::Tensor& residual, const torch::Tensor& b) {
  TORCH_CHECK(b.defined(), "add_layer_norm: b must be [", residual.size(-1), "]");
}

std::vector<torch::Tensor> add_norm_reference(const torch::Tensor& residual, const torch::Tensor& y,
                                              const torch::Tensor& w, const torch::Tensor& b, double eps,
                                              at::ScalarType out_dtype) {
  check_args(residual, y, w, b, out_dtype);
  const auto f = residual.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;  // the math's dtype
  auto r = y.defined() ? (residual.to(f) + y.to(f)).to(residual.scalar_type()) : residual;
  auto x = r.to(f);
  if (b.defined()) x = x - x.mean(-1, true);
  auto n = x * torch::rsqrt(x.square().mean(-1, true) + eps) * w.to(f);
  if (b.defined()) n = n + b.to(f);
  return {r, n.to(out_dtype)};
}

#ifdef ELMAN_WITH_CUDA
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// y and b arrive as empty tensors when absent. With y: outputs {r, n}; without, r is residual itself, so the only
// output is {n}.
struct AddNormFunction : public torch::autograd::Function<AddNormFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& residual, const torch::Tensor& y_or_empty,
                               const torch::Tensor& w, const torch::Tensor& b_or_empty, double eps,
                               int64_t out_dtype) {
    const bool add = y_or_empty.numel() > 0, layer = b_or_empty.numel() > 0;
    auto out = cuda::add_norm_fwd(residual, add ? y_or_empty : torch::Tensor(), w,
                                  layer ? b_or_empty : torch::Tensor(), eps,
                                  static_cast<at::ScalarType>(out_dtype));  // {r or undefined, n, rstd, mean}
    const auto& r = add ? out[0] : residual;
    ctx->save_for_backward({r, w, out[2], layer ? out[3] : torch::Tensor()});
    ctx->saved_data["add"] = add;
    ctx->saved_data["y_dtype"] = static_cast<int64_t>(y_or_empty.scalar_type());
    ctx->saved_data["b_dtype"] = static_cast<int64_t>(b_or_empty.scalar_type());
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
    // {dr, dy, dw f32, db f32 or undefined}
    auto g = cuda::add_norm_bwd(saved[0], saved[1], saved[2], saved[3], gr, gn, y_dtype);
    auto db = g[3].defined() ? g[3].to(static_cast<at::ScalarType>(ctx->saved_data["b_dtype"].toInt()))
                             : torch::Tensor();
    return {g[0], g[1], g[2].to(saved[1].scalar_type()), db, torch::Tensor(), torch::Tensor()};
  }
};
#endif

std::vector<torch::Tensor> add_norm(const torch::Tensor& residual, const torch::Tensor& y, const torch::Tensor& w,
                                    const torch::Tensor& b, double eps, at::ScalarType out_dtype, Impl impl) {
  if (impl != Impl::Kernel) return add_norm_reference(residual, y, w, b, eps, out_dtype);
  check_args(residual, y, w, b, out_dtype);
  check_kernel_runs(op_name(b), residual);
#ifdef ELMAN_WITH_CUDA
  TORCH_CHECK((!y.defined() || y.is_cuda()) && w.is_cuda() && (!b.defined() || b.is_cuda()), op_name(b),
              ": the CUDA kernel needs every input on the GPU");
  const auto empty = torch::empty({0}, residual.options());
  auto out = AddNormFunction::apply(residual, y.defined() ? y : empty, w, b.defined() ? b : empty, eps,
                                    static_cast<int64_t>(out_dtype));
  if (y.defined()) return out;
  return {residual, out[0]};
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}
}  // namespace

std::vector<torch::Tensor> add_rms_norm(const torch::Tensor& residual, const torch::Tensor& y, const torch::Tensor& w,
                                        double eps, at::ScalarType out_dtype, Impl impl) {
  return add_norm(residual, y, w, torch::Tensor(), eps, out_dtype, impl);
}

std::vector<torch::Tensor> add_layer_norm(const torch::Tensor& residual, const torch::Tensor& y,
                                          const torch::Tensor& w, const torch::Tensor& b, double eps,
                                          at::ScalarType out_dtype, Impl impl) {
  require_bias(residual, b);
  return add_norm(residual, y, w, b, eps, out_dtype, impl);
}

std::vector<torch::Tensor> add_rms_norm_reference(const torch::Tensor& residual, const torch::Tensor& y,
                                                  const torch::Tensor& w, double eps, at::ScalarType out_dtype) {
  return add_norm_reference(residual, y, w, torch::Tensor(), eps, out_dtype);
}

std::vector<torch::Tensor> add_layer_norm_reference(const torch::Tensor& residual, const torch::Tensor& y,
                                                    const torch::Tensor& w, const torch::Tensor& b, double eps,
                                                    at::ScalarType out_dtype) {
  require_bias(residual, b);
  return add_norm_reference(residual, y, w, b, eps, out_dtype);
}

}  // namespace elman::ops
