#include "ops/rope/rope.h"

#ifdef ELMAN_WITH_CUDA
#include "cuda/rope/rope.h"
#endif

namespace elman::ops {
namespace {
void check_args(const torch::Tensor& qkv, int64_t heads, double theta) {
  TORCH_CHECK(qkv.defined() && qkv.dim() == 3, "rope_qkv: qkv must be [B, T, 3 * heads * head_dim]");
  TORCH_CHECK(at::isFloatingType(qkv.scalar_type()), "rope_qkv: qkv must be floating point, got ", qkv.scalar_type());
  TORCH_CHECK(heads >= 1 && qkv.size(2) % (3 * heads) == 0 && (qkv.size(2) / (3 * heads)) % 2 == 0,
              "rope_qkv: the last dimension ", qkv.size(2), " must be 3 * heads (", heads, ") * an even head_dim");
  TORCH_CHECK(theta > 0, "rope_qkv: theta must be positive");
}
}  // namespace

std::vector<torch::Tensor> rope_qkv_reference(const torch::Tensor& qkv, int64_t heads, double theta) {
  check_args(qkv, heads, theta);
  const int64_t B = qkv.size(0), T = qkv.size(1), hd = qkv.size(2) / (3 * heads);
  auto parts = qkv.view({B, T, 3, heads, hd}).permute({2, 0, 3, 1, 4});  // [3,B,H,T,hd]
  const auto ft = qkv.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;  // the math's dtype
  auto f = qkv.options().dtype(ft);
  auto inv = torch::pow(theta, -torch::arange(0, hd, 2, f) / static_cast<double>(hd));  // [hd/2]
  auto ang = torch::outer(torch::arange(T, f), inv);                                     // [T, hd/2]
  auto c = ang.cos(), s = ang.sin();
  auto rope = [&](const torch::Tensor& t) {
    auto halves = t.to(ft).chunk(2, -1);
    return torch::cat({halves[0] * c - halves[1] * s, halves[0] * s + halves[1] * c}, -1).to(qkv.scalar_type());
  };
  return {rope(parts[0]), rope(parts[1]), parts[2].contiguous()};
}

#ifdef ELMAN_WITH_CUDA
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct RopeQkvFunction : public torch::autograd::Function<RopeQkvFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& qkv, int64_t heads, double theta) {
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["theta"] = theta;
    ctx->saved_data["B"] = qkv.size(0);
    ctx->saved_data["T"] = qkv.size(1);
    ctx->saved_data["width"] = qkv.size(2);
    ctx->saved_data["dtype"] = static_cast<int64_t>(qkv.scalar_type());
    ctx->set_materialize_grads(false);
    return cuda::rope_qkv_fwd(qkv, heads, theta);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto& d = ctx->saved_data;
    auto dqkv = cuda::rope_qkv_bwd(grads[0], grads[1], grads[2], d.at("B").toInt(), d.at("T").toInt(),
                                   d.at("width").toInt(), d.at("heads").toInt(), d.at("theta").toDouble(),
                                   static_cast<at::ScalarType>(d.at("dtype").toInt()));
    return {dqkv, torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace
#endif

std::vector<torch::Tensor> rope_qkv(const torch::Tensor& qkv, int64_t heads, double theta, Impl impl) {
  if (impl != Impl::Kernel) return rope_qkv_reference(qkv, heads, theta);
  check_args(qkv, heads, theta);
  check_kernel_runs("rope_qkv", qkv);
#ifdef ELMAN_WITH_CUDA
  return RopeQkvFunction::apply(qkv, heads, theta);
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

}  // namespace elman::ops
