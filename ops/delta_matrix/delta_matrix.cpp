#include "ops/delta_matrix/delta_matrix.h"

#ifdef ELMAN_WITH_CUDA
#include "cuda/delta_matrix/delta_matrix.h"
#endif

namespace elman::ops {

#ifdef ELMAN_WITH_CUDA
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct DeltaMatrixFunction : public torch::autograd::Function<DeltaMatrixFunction> {
  // Autograd's Function::apply rejects undefined tensor arguments, so an ungated cell's b_beta arrives as an
  // empty tensor; S0 is always defined (zeros when the caller passed none).
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& proj, const torch::Tensor& b_beta_or_empty,
                               const torch::Tensor& S0, int64_t heads, int64_t n) {
    const auto b_beta = b_beta_or_empty.numel() > 0 ? b_beta_or_empty : torch::Tensor();
    auto out = cuda::delta_matrix_fwd(proj, b_beta, S0, heads, n);  // {y, S_T, ckpt}
    ctx->save_for_backward({proj, b_beta, out[2]});
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["n"] = n;
    ctx->saved_data["S0_dtype"] = static_cast<int64_t>(S0.scalar_type());
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined: the kernel reads it as zero
    return {out[0], out[1]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &proj = saved[0], &b_beta = saved[1], &ckpt = saved[2];
    const int64_t heads = ctx->saved_data["heads"].toInt(), n = ctx->saved_data["n"].toInt();
    const auto S0_dtype = static_cast<at::ScalarType>(ctx->saved_data["S0_dtype"].toInt());
    auto g = cuda::delta_matrix_bwd(proj, b_beta, ckpt, grads[0], grads[1], heads, n);  // {dproj, db_beta, dS0}
    return {g[0], b_beta.defined() ? g[1].to(b_beta.scalar_type()) : torch::Tensor(), g[2].to(S0_dtype),
            torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace
#endif

std::vector<torch::Tensor> delta_matrix(const torch::Tensor& proj, const torch::Tensor& b_beta, const torch::Tensor& S0,
                                        int64_t heads, int64_t n_state, Impl impl) {
  check_delta_matrix_args(proj, b_beta, S0, heads, n_state);  // also the kernel's limits: n_state 1..64
  if (impl == Impl::Reference) return delta_matrix_reference(proj, b_beta, S0, heads, n_state);
  check_kernel_runs("delta_matrix", proj);
#ifdef ELMAN_WITH_CUDA
  TORCH_CHECK((!b_beta.defined() || b_beta.is_cuda()) && (!S0.defined() || S0.is_cuda()),
              "delta_matrix: the CUDA kernel needs every input on the GPU");
  auto S = S0.defined() ? S0
                        : torch::zeros({proj.size(0), heads, n_state, n_state}, proj.options().dtype(torch::kFloat));
  const auto bb = b_beta.defined() ? b_beta : torch::empty({0}, proj.options());
  return DeltaMatrixFunction::apply(proj, bb, S, heads, n_state);
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

}  // namespace elman::ops
