#include "models/mixers/mamba2.h"

#include <cmath>

#include "models/param.h"
#include "ops/gated_norm/gated_norm.h"
#include "ops/short_conv/short_conv.h"
#include "ops/ssd/ssd.h"

namespace elman::models {

Mamba2Mixer::Mamba2Mixer(const ModelConfig& cfg)
    : impl_(cfg.impl), fused_impl_(ops::fused_impl(cfg.impl)) {
  d_inner_ = kExpand * cfg.dim;
  TORCH_CHECK(d_inner_ % kHeadDim == 0, "mamba2: dim ", cfg.dim, " must be a multiple of ", kHeadDim / kExpand,
              " (d_inner = 2 dim is split into heads of ", kHeadDim, ")");
  heads_ = d_inner_ / kHeadDim;
  const int64_t N = kDState, conv_ch = d_inner_ + 2 * N;
  const auto& o = cfg.build;
  in_proj_ = make_param(*this, "in_proj", {2 * d_inner_ + 2 * N + heads_, cfg.dim}, Init::Uniform, o, 1,
                        1.0 / std::sqrt(static_cast<double>(cfg.dim)));
  conv_weight_ = make_param(*this, "conv_weight", {conv_ch, 1, kConvWidth}, Init::Uniform, o, 1,
                            1.0 / std::sqrt(static_cast<double>(kConvWidth)));
  conv_bias_ = make_param(*this, "conv_bias", {conv_ch}, Init::Uniform, o, 1,
                          1.0 / std::sqrt(static_cast<double>(kConvWidth)));
  dt_bias_ = make_param(*this, "dt_bias", {heads_}, Init::Zeros, o);
  A_log_ = make_param(*this, "A_log", {heads_}, Init::Zeros, o);
  D_ = make_param(*this, "D", {heads_}, Init::Ones, o);
  norm_ = make_param(*this, "norm", {d_inner_}, Init::Ones, o);
  out_proj_ = make_param(*this, "out_proj", {cfg.dim, d_inner_}, Init::Uniform, o, 1,
                         1.0 / std::sqrt(static_cast<double>(d_inner_)));
  if (!dt_bias_.is_meta()) {
    torch::NoGradGuard no_grad;
    auto f64 = torch::TensorOptions().dtype(torch::kDouble);
    auto dt = torch::exp(torch::rand({heads_}, f64) * (std::log(1e-1) - std::log(1e-3)) + std::log(1e-3))
                  .clamp_min(1e-4);
    dt_bias_.copy_(dt + torch::log(-torch::expm1(-dt)));  // softplus(dt_bias) = dt
    A_log_.copy_(torch::log(torch::rand({heads_}, f64) * 15.0 + 1.0));
  }
}

torch::Tensor Mamba2Mixer::forward(const torch::Tensor& u) {
  const int64_t Bsz = u.size(0), T = u.size(1), N = kDState, conv_ch = d_inner_ + 2 * N;
  // The projection's pieces are views of one split (not one narrow each, whose backward would zero-fill a
  // full-width gradient per piece); the gated norm and the conv write their gradients into its slots.
  const auto split = split_linear(u, in_proj_, {d_inner_, conv_ch, heads_});
  const auto &z = split.pieces[0], &dt_raw = split.pieces[2];
  // Depthwise causal conv + SiLU, reading xBC in place inside the projection and writing x, B, C apart.
  const auto xBC = ops::short_conv_split(split.pieces[1], conv_weight_, conv_bias_, true, {d_inner_, N, N}, fused_impl_,
                                         split.slots[1]);
  auto x = xBC[0].view({Bsz, T, heads_, kHeadDim});
  const auto &Bm = xBC[1], &Cm = xBC[2];
  auto dt = torch::softplus(dt_raw.to(torch::kFloat) + dt_bias_.to(torch::kFloat));
  auto A = -torch::exp(A_log_.to(torch::kFloat));
  auto y = ops::ssd(x, dt, A, Bm, Cm, D_, torch::Tensor(), impl_)[0];
  // The normed output comes in the autocast dtype under autocast (out_proj reads it without a cast), else u's.
  auto normed = ops::gated_rms_norm(y.reshape({Bsz, T, d_inner_}), z, norm_, ops::GateOrder::GateThenNorm, 1e-5,
                                    ops::autocast_dtype_or(u), fused_impl_, split.slots[0]);
  return models::linear(normed, out_proj_);
}

}  // namespace elman::models
