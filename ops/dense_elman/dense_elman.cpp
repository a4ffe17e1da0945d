#include "ops/dense_elman/dense_elman.h"

#ifdef ELMAN_WITH_CUDA
#include "cuda/dense_elman/dense_elman.h"
#endif

namespace elman::ops {

#ifdef ELMAN_WITH_CUDA
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct DenseElmanFunction : public torch::autograd::Function<DenseElmanFunction> {
  // Autograd's Function::apply records every tensor argument and rejects undefined ones, so apre arrives
  // as an empty tensor unless mode is GatedTanh; h0 is always defined (zeros when the caller passed none).
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& pre, const torch::Tensor& W,
                               const torch::Tensor& apre_or_empty, const torch::Tensor& h0, int64_t mode) {
    const auto apre = apre_or_empty.numel() > 0 ? apre_or_empty : torch::Tensor();
    auto out = cuda::dense_elman_fwd(pre, W, apre, h0, mode);  // {h, h_hist, h_T, c_hist}
    ctx->save_for_backward({W, apre, h0, out[1], out[3], out[0]});
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["dtype"] = static_cast<int64_t>(pre.scalar_type());
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined: the kernel reads it as zero
    return {out[0], out[2]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &W = saved[0], &apre = saved[1], &h0 = saved[2], &h_hist = saved[3], &c_hist = saved[4], &h = saved[5];
    const int64_t mode = ctx->saved_data["mode"].toInt();
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    auto g = cuda::dense_elman_bwd(W, apre, h0, h_hist, c_hist, h, grads[0], grads[1], mode, dtype);
    // {dpre, dW, dapre, dh0}; the last slot is the non-tensor mode.
    return {g[0], g[1].to(W.scalar_type()), apre.defined() ? g[2].to(apre.scalar_type()) : torch::Tensor(),
            g[3].to(h0.scalar_type()), torch::Tensor()};
  }
};
}  // namespace
#endif

std::vector<torch::Tensor> dense_elman(const torch::Tensor& pre, const torch::Tensor& W, const torch::Tensor& apre,
                                       const torch::Tensor& h0, DenseMode mode, Impl impl) {
  if (impl == Impl::Reference) return dense_elman_reference(pre, W, apre, h0, mode);
  check_kernel_runs("dense_elman", pre);
#ifdef ELMAN_WITH_CUDA
  check_dense_elman_args(pre, W, apre, h0, mode);
  TORCH_CHECK(W.is_cuda() && (!apre.defined() || apre.is_cuda()) && (!h0.defined() || h0.is_cuda()),
              "dense_elman: the CUDA kernel needs every input on the GPU");
  auto h = h0.defined() ? h0 : torch::zeros({pre.size(0), pre.size(2)}, pre.options().dtype(torch::kFloat));
  const auto a = apre.defined() ? apre : torch::empty({0}, pre.options());
  return DenseElmanFunction::apply(pre, W, a, h, static_cast<int64_t>(mode));
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

}  // namespace elman::ops
