#include "models/mixers/dense_elman.h"

#include "models/param.h"
#include "models/spectral_norm.h"
#include "ops/dense_elman/dense_elman.h"
#include "ops/swiglu/swiglu.h"

namespace elman::models {

DenseElmanMixer::DenseElmanMixer(const ModelConfig& cfg, DenseCell cell)
    : cell_(cell), output_gate_(cell == DenseCell::E1 || cell == DenseCell::E56), impl_(cfg.impl) {
  D_ = static_cast<int64_t>(cfg.dim * cfg.expansion);
  const int64_t D = D_;
  TORCH_CHECK(D >= 1, cfg.name, ": dim * expansion must be at least 1");
  const auto& o = cfg.build;
  in_proj_ = make_param(*this, "in_proj", {output_gate_ ? 2 * D : D, cfg.dim}, Init::Xavier, o, output_gate_ ? 2 : 1);
  switch (cell) {
    case DenseCell::E1:
      w_x_ = make_param(*this, "w_x", {D, D}, Init::Xavier, o);
      w_h_ = make_param(*this, "w_h", {D, D}, Init::Xavier, o, 1, /*gain=*/0.1);
      spectral_u_ = make_spectral_u(*this, "w_h", D, o);
      break;
    case DenseCell::E42:
      w_h_ = make_param(*this, "w", {D, D}, Init::Xavier, o, 1, /*gain=*/0.1);
      spectral_u_ = make_spectral_u(*this, "w", D, o);
      break;
    case DenseCell::E56:
      w_h_ = make_param(*this, "w", {D, 2 * D}, Init::Xavier, o);  // [W_x | W_h], xavier over the whole matrix
      break;
    case DenseCell::E63:
    case DenseCell::E66:
      w_x_ = make_param(*this, "w_alpha_x", {2 * D, D}, Init::Xavier, o, 2);  // [W_alpha; W_x]
      b_alpha_ = make_param(*this, "b_alpha", {D}, Init::Constant, o, 1, 2.0);
      if (cell == DenseCell::E63) {
        w_h_ = make_param(*this, "w_h", {D, D}, Init::Orthogonal, o, 1, 0.5);
      } else {
        const int64_t r = std::max<int64_t>(D / 4, 16);
        u_ = make_param(*this, "u", {D, r}, Init::Orthogonal, o, 1, 0.5);
        v_ = make_param(*this, "v", {r, D}, Init::Orthogonal, o, 1, 0.5);
      }
      break;
  }
  b_ = make_param(*this, "b", {D}, Init::Zeros, o);
  out_proj_ = make_param(*this, "out_proj", {cfg.dim, D}, Init::Xavier, o);
}

torch::Tensor DenseElmanMixer::forward(const torch::Tensor& x) {
  const int64_t D = D_;
  auto u = torch::linear(x, in_proj_);
  torch::Tensor z;
  if (output_gate_) {
    auto halves = u.chunk(2, -1);
    u = halves[0], z = halves[1];
  }
  u = torch::silu(u);
  torch::Tensor y;
  switch (cell_) {
    case DenseCell::E1: {
      auto w_h = spectral_normalize(w_h_, spectral_u_, 0.99, is_training());
      auto h = ops::dense_elman(torch::linear(u, w_x_, b_), w_h, {}, {}, ops::DenseMode::Tanh, impl_)[0];
      y = h * torch::silu(z);
      break;
    }
    case DenseCell::E42: {
      auto w = spectral_normalize(w_h_, spectral_u_, 0.999, is_training());
      y = ops::selfgate(ops::dense_elman(torch::linear(u, w, b_), w, {}, {}, ops::DenseMode::Linear, impl_)[0], impl_);
      break;
    }
    case DenseCell::E56: {
      auto pre = torch::linear(u, w_h_.narrow(1, 0, D), b_);
      auto h = ops::dense_elman(pre, w_h_.narrow(1, D, D), {}, {}, ops::DenseMode::Tanh, impl_)[0];
      y = h * torch::silu(z);
      break;
    }
    case DenseCell::E63:
    case DenseCell::E66: {
      auto ax = torch::linear(u, w_x_).chunk(2, -1);
      auto w_h = cell_ == DenseCell::E63 ? w_h_ : torch::matmul(u_, v_);
      // The biases are added in the projection's dtype: fp32 parameters added to a bf16 (autocast) tensor would
      // promote the pre-activations to fp32 and send the recurrence down the kernel's fp32 path.
      const auto dt = ax[1].scalar_type();
      auto h = ops::dense_elman(ax[1] + b_.to(dt), w_h, ax[0] + b_alpha_.to(dt), {}, ops::DenseMode::GatedTanh,
                                impl_)[0];
      y = ops::selfgate(h, impl_);
      break;
    }
  }
  return torch::linear(y, out_proj_);
}

}  // namespace elman::models
