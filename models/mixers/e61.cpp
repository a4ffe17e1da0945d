#include "models/mixers/e61.h"

#include "models/param.h"
#include "ops/e61/e61.h"

namespace elman::models {

E61Mixer::E61Mixer(const ModelConfig& cfg) : impl_(cfg.impl) {
  const int64_t D = static_cast<int64_t>(cfg.dim * cfg.expansion);
  TORCH_CHECK(D >= 1, "e61: dim * expansion must be at least 1");
  const auto& o = cfg.build;
  in_proj_ = make_param(*this, "in_proj", {D, cfg.dim}, Init::Xavier, o);
  w_av_ = make_param(*this, "w_alpha_v", {2 * D, D}, Init::Xavier, o, /*xavier_blocks=*/2);
  b_alpha_ = make_param(*this, "b_alpha", {D}, Init::Constant, o, 1, 2.0);
  b_v_ = make_param(*this, "b_v", {D}, Init::Zeros, o);
  out_proj_ = make_param(*this, "out_proj", {cfg.dim, D}, Init::Xavier, o);
}

torch::Tensor E61Mixer::forward(const torch::Tensor& x) {
  auto u = torch::silu(torch::linear(x, in_proj_));
  auto proj = torch::linear(u, w_av_);
  auto y = ops::e61(proj, b_alpha_, b_v_, torch::Tensor(), impl_)[0];
  return torch::linear(y, out_proj_);
}

}  // namespace elman::models
