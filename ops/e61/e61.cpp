#include "ops/e61/e61.h"

#include "ops/e61/reference.h"
#ifdef ELMAN_WITH_CUDA
#include "cuda/e61/e61.h"
#endif

namespace elman::ops {

#ifdef ELMAN_WITH_CUDA
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct E61Function : public torch::autograd::Function<E61Function> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& proj, const torch::Tensor& b_alpha,
                               const torch::Tensor& b_v, const torch::Tensor& h0) {
    auto out = cuda::e61_fwd(proj, b_alpha, b_v, h0);  // {y, h_hist, h_T}
    ctx->save_for_backward({proj, b_alpha, b_v, h0, out[1]});
    return {out[0], out[2]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &proj = saved[0], &b_alpha = saved[1], &b_v = saved[2], &h0 = saved[3], &h_hist = saved[4];
    auto g = cuda::e61_bwd(proj, b_alpha, b_v, h0, h_hist, grads[0], grads[1]);  // {dproj, db_a, db_v, dh0}
    return {g[0], g[1].to(b_alpha.scalar_type()), g[2].to(b_v.scalar_type()), g[3].to(h0.scalar_type())};
  }
};
}  // namespace
#endif

std::vector<torch::Tensor> e61(const torch::Tensor& proj, const torch::Tensor& b_alpha,
                               const torch::Tensor& b_v, const torch::Tensor& h0, Impl impl) {
  if (impl == Impl::Reference) return e61_reference(proj, b_alpha, b_v, h0);
#ifdef ELMAN_WITH_CUDA
  TORCH_CHECK(proj.is_cuda(), "e61: the CUDA kernel needs CUDA tensors; use the reference implementation on CPU");
  const int64_t B = proj.size(0), D = proj.size(2) / 2;
  auto h = h0.defined() ? h0 : torch::zeros({B, D}, proj.options().dtype(torch::kFloat));
  return E61Function::apply(proj, b_alpha, b_v, h);
#else
  TORCH_CHECK(false, "e61: this binary was built without CUDA, so the kernel implementation is unavailable; "
                     "rebuild with CUDA or use the reference implementation");
  return {};
#endif
}

}  // namespace elman::ops
