#include "ops/ssd/ssd.h"

#ifdef ELMAN_WITH_CUDA
#include "cuda/ssd/ssd.h"
#endif

namespace elman::ops {

#ifdef ELMAN_WITH_CUDA
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Takes the kernel's canonical inputs (ssd() below converts and aligns them, so autograd carries the gradients
// back through those conversions). Autograd's Function::apply rejects undefined tensor arguments, so "no h0"
// arrives as an empty tensor.
struct SsdFunction : public torch::autograd::Function<SsdFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& dt,
                               const torch::Tensor& A, const torch::Tensor& Bm, const torch::Tensor& Cm,
                               const torch::Tensor& D, const torch::Tensor& h0_or_empty) {
    const bool has_h0 = h0_or_empty.numel() > 0;
    auto out = cuda::ssd_fwd(x, dt, A, Bm, Cm, D, has_h0 ? h0_or_empty : torch::Tensor());  // {y, h_T, states}
    ctx->save_for_backward({x, dt, A, Bm, Cm, D, out[2]});
    ctx->saved_data["has_h0"] = has_h0;
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined: the kernel reads it as zero
    return {out[0], out[1]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    auto g = cuda::ssd_bwd(s[0], s[1], s[2], s[3], s[4], s[5], s[6], grads[0], grads[1]);
    // {dx, ddt, dA, dB, dC, dD, dh0}: dB and dC come back in fp32; the Function's B and C have x's dtype.
    return {g[0], g[1], g[2], g[3].to(s[3].scalar_type()), g[4].to(s[4].scalar_type()), g[5],
            ctx->saved_data["has_h0"].toBool() ? g[6] : torch::Tensor()};
  }
};

// t in dtype, contiguous, its data 16-byte aligned (the kernels load 16-byte vectors).
torch::Tensor kernel_operand(const torch::Tensor& t, torch::Dtype dtype) {
  auto c = t.to(dtype).contiguous();
  return reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 == 0 ? c : c.clone();
}
}  // namespace
#endif

std::vector<torch::Tensor> ssd(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
                               const torch::Tensor& Bm, const torch::Tensor& Cm, const torch::Tensor& D,
                               const torch::Tensor& h0, Impl impl) {
  check_ssd_args(x, dt, A, Bm, Cm, D, h0);
  if (impl == Impl::Reference) return ssd_reference(x, dt, A, Bm, Cm, D, h0);
  if (impl == Impl::Chunked) return ssd_chunked(x, dt, A, Bm, Cm, D, h0, kSsdChunk);
  TORCH_CHECK(x.size(3) == kSsdKernelHeadDim && Bm.size(2) == kSsdKernelDState,
              "ssd: the CUDA kernel supports headdim P = ", kSsdKernelHeadDim, " and d_state N = ", kSsdKernelDState,
              " only, got P = ", x.size(3), " and N = ", Bm.size(2), "; use --impl chunked or --impl reference");
  TORCH_CHECK(x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16,
              "ssd: the CUDA kernel takes float32 or bfloat16 x, got ", x.scalar_type(),
              "; use --impl chunked or --impl reference");
  check_kernel_runs("ssd", x);
#ifdef ELMAN_WITH_CUDA
  for (const auto* t : {&dt, &A, &Bm, &Cm, &D, &h0})
    TORCH_CHECK(!t->defined() || t->device() == x.device(), "ssd: the CUDA kernel needs every input on x's device");
  const auto st = x.scalar_type();
  auto out = SsdFunction::apply(
      kernel_operand(x, st), kernel_operand(dt, torch::kFloat), kernel_operand(A, torch::kFloat),
      kernel_operand(Bm, st), kernel_operand(Cm, st), kernel_operand(D, torch::kFloat),
      h0.defined() ? kernel_operand(h0, torch::kFloat) : torch::empty({0}, x.options().dtype(torch::kFloat)));
  // h_T is fp32 like the reference's; y has x's dtype.
  return {out[0], out[1]};
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

}  // namespace elman::ops
