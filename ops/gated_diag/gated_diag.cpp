#include "ops/gated_diag/gated_diag.h"

#include "ops/gated_diag/reference.h"
#ifdef ELMAN_WITH_CUDA
#include "cuda/gated_diag/gated_diag.h"
#endif

namespace elman::ops {

#ifdef ELMAN_WITH_CUDA
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct GatedDiagFunction : public torch::autograd::Function<GatedDiagFunction> {
  static variable_list forward(AutogradContext* ctx, int64_t cell, const torch::Tensor& proj, const torch::Tensor& w,
                               const torch::Tensor& h0) {
    auto out = cuda::gated_diag_fwd(static_cast<int>(cell), proj, w, h0);  // {y, h_hist, h_T}
    ctx->saved_data["cell"] = cell;
    ctx->save_for_backward({proj, w, h0, out[1]});
    return {out[0], out[2]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto cell = static_cast<int>(ctx->saved_data["cell"].toInt());
    auto g = cuda::gated_diag_bwd(cell, s[0], s[1], s[2], s[3], grads[0], grads[1]);  // {dproj, dw, dh0}
    return {torch::Tensor(), g[0], g[1].to(s[1].scalar_type()), g[2].to(s[2].scalar_type())};
  }
};
}  // namespace
#endif

std::vector<torch::Tensor> gated_diag(DiagCell cell, const torch::Tensor& proj, const torch::Tensor& w,
                                      const torch::Tensor& h0, Impl impl) {
  if (impl == Impl::Reference) return gated_diag_reference(cell, proj, w, h0);
  check_kernel_runs(diag_cell_info(cell).name, proj);
#ifdef ELMAN_WITH_CUDA
  const int64_t B = proj.size(0), D = proj.size(2) / 2;
  auto h = h0.defined() ? h0 : torch::zeros({B, D}, proj.options().dtype(torch::kFloat));
  return GatedDiagFunction::apply(static_cast<int64_t>(cell), proj, w, h);
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

}  // namespace elman::ops
