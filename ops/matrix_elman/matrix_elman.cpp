#include "ops/matrix_elman/matrix_elman.h"

#ifdef ELMAN_WITH_CUDA
#include "cuda/matrix_elman/matrix_elman.h"
#endif

namespace elman::ops {

#ifdef ELMAN_WITH_CUDA
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct MatrixElmanFunction : public torch::autograd::Function<MatrixElmanFunction> {
  // S0 is always defined here (zeros when the caller passed none).
  static variable_list forward(AutogradContext* ctx, int64_t cell, const torch::Tensor& proj, const torch::Tensor& w,
                               const torch::Tensor& S0, int64_t n) {
    auto out = cuda::matrix_elman_fwd(static_cast<int>(cell), proj, w, S0, n);  // {y, S_T, ckpt}
    ctx->save_for_backward({proj, w, out[2]});
    ctx->saved_data["cell"] = cell;
    ctx->saved_data["n"] = n;
    ctx->saved_data["S0_dtype"] = static_cast<int64_t>(S0.scalar_type());
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined: the kernel reads it as zero
    return {out[0], out[1]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &proj = saved[0], &w = saved[1], &ckpt = saved[2];
    const auto cell = static_cast<int>(ctx->saved_data["cell"].toInt());
    const int64_t n = ctx->saved_data["n"].toInt();
    const auto S0_dtype = static_cast<at::ScalarType>(ctx->saved_data["S0_dtype"].toInt());
    auto g = cuda::matrix_elman_bwd(cell, proj, w, ckpt, grads[0], grads[1], n);  // {dproj, dw, dS0}
    return {torch::Tensor(), g[0], g[1].to(w.scalar_type()), g[2].to(S0_dtype), torch::Tensor()};
  }
};
}  // namespace
#endif

std::vector<torch::Tensor> matrix_elman(MatrixCell cell, const torch::Tensor& proj, const torch::Tensor& w,
                                        const torch::Tensor& S0, int64_t n_state, Impl impl) {
  check_matrix_elman_args(cell, proj, w, S0, n_state);  // also the kernel's limits: n_state 1..128
  if (impl == Impl::Reference) return matrix_elman_reference(cell, proj, w, S0, n_state);
  check_kernel_runs(matrix_cell_info(cell).name, proj);
#ifdef ELMAN_WITH_CUDA
  TORCH_CHECK(w.is_cuda() && (!S0.defined() || S0.is_cuda()), matrix_cell_info(cell).name,
              ": the CUDA kernel needs every input on the GPU");
  auto S = S0.defined() ? S0 : torch::zeros({proj.size(0), n_state, n_state}, proj.options().dtype(torch::kFloat));
  return MatrixElmanFunction::apply(static_cast<int64_t>(cell), proj, w, S, n_state);
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

}  // namespace elman::ops
