#include "models/param.h"

#include <cmath>

#include <ATen/autocast_mode.h>

#include "ops/common/weight_copies.h"

namespace elman::models {

torch::Tensor make_param(torch::nn::Module& m, const std::string& name, torch::IntArrayRef shape, Init init,
                         const torch::TensorOptions& opts, int64_t xavier_blocks, double value) {
  auto t = torch::empty(shape, opts);
  if (!t.is_meta()) {
    torch::NoGradGuard no_grad;
    switch (init) {
      case Init::Xavier: {
        TORCH_CHECK(t.dim() == 2 && t.size(0) % xavier_blocks == 0, "xavier init needs a 2-D weight");
        const int64_t rows = t.size(0) / xavier_blocks;
        const double bound = value * std::sqrt(6.0 / static_cast<double>(rows + t.size(1)));
        t.uniform_(-bound, bound);
        break;
      }
      case Init::Orthogonal: torch::nn::init::orthogonal_(t, value); break;
      case Init::Normal002: t.normal_(0.0, 0.02); break;
      case Init::Ones: t.fill_(1.0); break;
      case Init::Zeros: t.zero_(); break;
      case Init::Constant: t.fill_(value); break;
      case Init::Uniform: t.uniform_(-value, value); break;
    }
  }
  return m.register_parameter(name, t);
}

namespace {
// y = x w^T in the autocast dtype, saving the low-precision operands; dw = dy^T x with an fp32 GEMM output.
struct AutocastLinear : torch::autograd::Function<AutocastLinear> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               at::ScalarType dtype) {
    // The weight's copy in the autocast dtype that the optimizer keeps (ops/common/weight_copies.h), else a cast.
    const auto copy = ops::weight_copy(w, dtype);
    const auto xl = x.to(dtype), wl = copy.defined() ? copy : w.to(dtype);
    ctx->save_for_backward({xl, wl});
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["w_dtype"] = static_cast<int64_t>(w.scalar_type());
    return at::matmul(xl, wl.t());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &xl = saved[0], &wl = saved[1];
    const auto dy = grads[0].to(xl.scalar_type());
    torch::Tensor dx, dw;
    if (ctx->needs_input_grad(0))
      dx = at::matmul(dy, wl).to(static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt()));
    if (ctx->needs_input_grad(1)) {
      const auto w_dtype = static_cast<at::ScalarType>(ctx->saved_data["w_dtype"].toInt());
      dw = at::mm(dy.reshape({-1, dy.size(-1)}).t(), xl.reshape({-1, xl.size(-1)}), w_dtype);
    }
    return {dx, dw, torch::Tensor()};
  }
};
}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w) {
  const auto dev = x.device().type();
  if (!at::autocast::is_autocast_enabled(dev)) return torch::linear(x, w);
  const auto dtype = at::autocast::get_autocast_dtype(dev);
  // Autocast is left on inside: the products' operands are already in its dtype, so it casts nothing more.
  return AutocastLinear::apply(x, w, dtype);
}

ops::SlottedSplit split_linear(const torch::Tensor& x, const torch::Tensor& w, std::vector<int64_t> sizes) {
  const int64_t pad = (8 - w.size(0) % 8) % 8;
  if (pad == 0) return ops::split_with_slots(models::linear(x, w), sizes);
  sizes.push_back(pad);
  auto s = ops::split_with_slots(models::linear(x, torch::constant_pad_nd(w, {0, 0, 0, pad})), sizes);
  s.pieces.pop_back(), s.slots.pop_back();
  return s;
}

}  // namespace elman::models
