#include "ops/short_conv/reference.h"

namespace elman::ops {

void check_short_conv_args(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias) {
  TORCH_CHECK(x.defined() && x.dim() == 3 && x.size(0) >= 1 && x.size(1) >= 1 && x.size(2) >= 1,
              "short_conv: x must be [B,T,C] with B, T, C >= 1, got ", x.defined() ? x.sizes() : at::IntArrayRef{});
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "short_conv: x must be floating point, got ", x.scalar_type());
  const int64_t C = x.size(2);
  TORCH_CHECK(w.defined() && w.dim() == 3 && w.size(0) == C && w.size(1) == 1 && w.size(2) >= 1,
              "short_conv: w must be [C,1,W] = [", C, ",1,W] with W >= 1 (a depthwise Conv1d weight), got ",
              w.defined() ? w.sizes() : at::IntArrayRef{});
  TORCH_CHECK(at::isFloatingType(w.scalar_type()), "short_conv: w must be floating point, got ", w.scalar_type());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == C && at::isFloatingType(bias.scalar_type())),
              "short_conv: bias must be a floating-point [", C, "] or undefined, got ", bias.sizes());
  TORCH_CHECK(w.device() == x.device() && (!bias.defined() || bias.device() == x.device()),
              "short_conv: x, w and bias must be on one device");
}

torch::Tensor short_conv_reference(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                                   bool silu) {
  check_short_conv_args(x, w, bias);
  const int64_t T = x.size(1), C = x.size(2), W = w.size(2);
  const auto dt = x.scalar_type();
  // conv1d pads both sides by W-1; the first T outputs are the causal ones.
  auto a = torch::conv1d(x.transpose(1, 2), w.to(dt), bias.defined() ? bias.to(dt) : torch::Tensor(), 1, W - 1, 1, C)
               .narrow(2, 0, T)
               .transpose(1, 2);
  return silu ? torch::silu(a) : a;
}

}  // namespace elman::ops
