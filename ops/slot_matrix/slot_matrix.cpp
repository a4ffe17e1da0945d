#include "ops/slot_matrix/slot_matrix.h"

#include "cuda/slot_matrix/geometry.h"

#ifdef ELMAN_WITH_CUDA
#include "cuda/slot_matrix/slot_matrix.h"
#endif

namespace elman::ops {

#ifdef ELMAN_WITH_CUDA
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct SlotMatrixFunction : public torch::autograd::Function<SlotMatrixFunction> {
  // S0 is always defined here (zeros when the caller passed none).
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& proj, const torch::Tensor& W_r,
                               const torch::Tensor& b, const torch::Tensor& b_alpha, const torch::Tensor& S0,
                               int64_t slots) {
    auto out = cuda::slot_matrix_fwd(proj, W_r, b, b_alpha, S0, slots);  // {y, S_T, ckpt}
    ctx->save_for_backward({proj, W_r, b, b_alpha, out[2]});
    ctx->saved_data["slots"] = slots;
    ctx->saved_data["S0_dtype"] = static_cast<int64_t>(S0.scalar_type());
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined: the kernel reads it as zero
    return {out[0], out[1]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &proj = saved[0], &W_r = saved[1], &b = saved[2], &b_alpha = saved[3], &ckpt = saved[4];
    const int64_t slots = ctx->saved_data["slots"].toInt();
    const auto S0_dtype = static_cast<at::ScalarType>(ctx->saved_data["S0_dtype"].toInt());
    // {dproj, dW_r, db, db_alpha, dS0}
    auto g = cuda::slot_matrix_bwd(proj, W_r, b, b_alpha, ckpt, grads[0], grads[1], slots);
    return {g[0], g[1].to(W_r.scalar_type()), g[2].to(b.scalar_type()), g[3].to(b_alpha.scalar_type()),
            g[4].to(S0_dtype), torch::Tensor()};
  }
};
}  // namespace
#endif

int64_t slot_matrix_kernel_max_width(int64_t slots) { return cuda::slots::max_width(static_cast<int>(slots)); }

std::vector<torch::Tensor> slot_matrix(const torch::Tensor& proj, const torch::Tensor& W_r, const torch::Tensor& b,
                                       const torch::Tensor& b_alpha, const torch::Tensor& S0, int64_t slots,
                                       Impl impl) {
  check_slot_matrix_args(proj, W_r, b, b_alpha, S0, slots);  // also the kernel's limit: 1..16 slots
  if (impl == Impl::Reference) return slot_matrix_reference(proj, W_r, b, b_alpha, S0, slots);
  check_kernel_runs("slot_matrix", proj);
#ifdef ELMAN_WITH_CUDA
  TORCH_CHECK(W_r.is_cuda() && b.is_cuda() && b_alpha.is_cuda() && (!S0.defined() || S0.is_cuda()),
              "slot_matrix: the CUDA kernel needs every input on the GPU");
  auto S = S0.defined() ? S0
                        : torch::zeros({proj.size(0), slots, slot_matrix_width(proj, slots)},
                                       proj.options().dtype(torch::kFloat));
  return SlotMatrixFunction::apply(proj, W_r, b, b_alpha, S, slots);
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

}  // namespace elman::ops
