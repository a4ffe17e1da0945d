#include "models/mixers/gated_deltanet.h"

#include <cmath>

#include "models/param.h"
#include "ops/gated_delta/gated_delta.h"
#include "ops/gated_norm/gated_norm.h"
#include "ops/short_conv/short_conv.h"

namespace elman::models {

GatedDeltaNetMixer::GatedDeltaNetMixer(const ModelConfig& cfg)
    : impl_(cfg.impl), fused_impl_(ops::fused_impl(cfg.impl)) {
  TORCH_CHECK(cfg.heads > 0 || cfg.dim % kKeyHeadDim == 0, "gdn: dim ", cfg.dim, " must be a multiple of ",
              kKeyHeadDim, " (key head dim ", kKeyHeadDim, " by default), or set --heads to a divisor of it");
  heads_ = cfg.heads > 0 ? cfg.heads : cfg.dim / kKeyHeadDim;
  TORCH_CHECK(cfg.dim % heads_ == 0, "gdn: dim ", cfg.dim, " must be a multiple of the head count ", heads_);
  dk_ = cfg.dim / heads_, dv_ = kExpandV * dk_;
  const int64_t H = heads_, conv_ch = 2 * H * dk_ + H * dv_;
  const auto& o = cfg.build;
  in_proj_ = make_param(*this, "in_proj", {conv_ch + H * dv_ + 2 * H, cfg.dim}, Init::Uniform, o, 1,
                        1.0 / std::sqrt(static_cast<double>(cfg.dim)));
  conv_weight_ = make_param(*this, "conv_weight", {conv_ch, 1, kConvWidth}, Init::Uniform, o, 1,
                            1.0 / std::sqrt(static_cast<double>(kConvWidth)));
  A_log_ = make_param(*this, "A_log", {H}, Init::Zeros, o);
  dt_bias_ = make_param(*this, "dt_bias", {H}, Init::Zeros, o);
  o_norm_ = make_param(*this, "o_norm", {dv_}, Init::Ones, o);
  out_proj_ = make_param(*this, "out_proj", {cfg.dim, H * dv_}, Init::Uniform, o, 1,
                         1.0 / std::sqrt(static_cast<double>(H * dv_)));
  if (!A_log_.is_meta()) {
    torch::NoGradGuard no_grad;
    auto f64 = torch::TensorOptions().dtype(torch::kDouble);
    A_log_.copy_(torch::log(torch::rand({H}, f64) * 16.0));
    auto dt = torch::exp(torch::rand({H}, f64) * (std::log(1e-1) - std::log(1e-3)) + std::log(1e-3)).clamp_min(1e-4);
    dt_bias_.copy_(dt + torch::log(-torch::expm1(-dt)));  // softplus(dt_bias) = dt
  }
}

torch::Tensor GatedDeltaNetMixer::forward(const torch::Tensor& u) {
  const int64_t Bsz = u.size(0), T = u.size(1), H = heads_, conv_ch = 2 * H * dk_ + H * dv_;
  // The pieces are views of one split; the conv and the gated norm write their gradients into its slots.
  const auto split = split_linear(u, in_proj_, {conv_ch, H * dv_, H, H});
  const auto& pieces = split.pieces;
  // Depthwise causal conv + SiLU, reading its input in place inside the projection and writing q, k, v apart.
  const auto qkv = ops::short_conv_split(pieces[0], conv_weight_, torch::Tensor(), true, {H * dk_, H * dk_, H * dv_},
                                         fused_impl_, split.slots[0]);
  auto gate = pieces[1].reshape({Bsz, T, H, dv_});
  const auto &a = pieces[2], &b = pieces[3];
  // q and k are L2-normalised (q also scaled by 1/sqrt(K)) inside gated_delta (qk_l2norm): the kernel does it in
  // its chunk preparation, forward and backward, rather than in passes of their own over q and k.
  auto q = qkv[0].view({Bsz, T, H, dk_});
  auto k = qkv[1].view({Bsz, T, H, dk_});
  auto v = qkv[2].view({Bsz, T, H, dv_});
  auto beta = torch::sigmoid(b.to(torch::kFloat));
  auto g = -torch::exp(A_log_.to(torch::kFloat)) * torch::softplus(a.to(torch::kFloat) + dt_bias_.to(torch::kFloat));
  auto o = ops::gated_delta(q, k, v, g, beta, torch::Tensor(), impl_, /*qk_l2norm=*/true)[0];  // [B,T,H,V]
  // Gated RMSNorm per head, in the autocast dtype under autocast (out_proj reads it without a cast), else u's.
  auto normed = ops::gated_rms_norm(o, gate, o_norm_, ops::GateOrder::NormThenGate, 1e-5, ops::autocast_dtype_or(u),
                                    fused_impl_, split.slots[1]);
  return models::linear(normed.reshape({Bsz, T, H * dv_}), out_proj_);
}

}  // namespace elman::models
