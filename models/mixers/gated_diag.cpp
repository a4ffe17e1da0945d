#include "models/mixers/gated_diag.h"

#include "models/param.h"
#include "ops/gated_diag/gated_diag.h"

namespace elman::models {

GatedDiagMixer::GatedDiagMixer(const ModelConfig& cfg, ops::DiagCell cell) : cell_(cell), impl_(cfg.impl) {
  const int64_t D = static_cast<int64_t>(cfg.dim * cfg.expansion);
  TORCH_CHECK(D >= 1, cfg.name, ": dim * expansion must be at least 1");
  const auto& o = cfg.build;
  in_proj_ = make_param(*this, "in_proj", {D, cfg.dim}, Init::Xavier, o);
  w_proj_ = make_param(*this, "w_proj", {2 * D, D}, Init::Xavier, o, /*xavier_blocks=*/2);
  for (const auto& [name, value] : ops::diag_cell_info(cell).params)
    channel_params_.push_back(make_param(*this, name, {D}, Init::Constant, o, 1, value));
  out_proj_ = make_param(*this, "out_proj", {cfg.dim, D}, Init::Xavier, o);
}

torch::Tensor GatedDiagMixer::forward(const torch::Tensor& x) {
  auto u = torch::silu(torch::linear(x, in_proj_));
  auto proj = torch::linear(u, w_proj_);
  auto y = ops::gated_diag(cell_, proj, torch::stack(channel_params_), torch::Tensor(), impl_)[0];
  return torch::linear(y, out_proj_);
}

E74DiagMixer::E74DiagMixer(const ModelConfig& cfg) : impl_(cfg.impl), tied_(cfg.projection == "tiedkvq") {
  const bool delta = cfg.update == "delta", tanh = cfg.nonlinearity == "tanh";
  TORCH_CHECK(tanh || !delta, cfg.name, " --state diagonal --update delta --nonlinearity linear is refused: k is not "
              "normalised, so |1 - k^2| > 1 whenever |k| > sqrt 2 and the linear state grows without bound (the "
              "reference went NaN); use --nonlinearity tanh or --update simple");
  cell_ = delta ? ops::DiagCell::E74DeltaTanh : tanh ? ops::DiagCell::E74SimpleTanh : ops::DiagCell::E74SimpleLinear;
  const int64_t n = cfg.nstate, D = static_cast<int64_t>(cfg.dim * cfg.expansion);
  TORCH_CHECK(n >= 1, cfg.name, ": --nstate must be at least 1");
  TORCH_CHECK(D >= 1, cfg.name, ": dim * expansion must be at least 1");
  const auto& o = cfg.build;
  in_proj_ = make_param(*this, "in_proj", {D, cfg.dim}, Init::Normal002, o);
  w_kv_ = make_param(*this, tied_ ? "w_k" : "w_kv", {tied_ ? n : 2 * n, D}, Init::Xavier, o, tied_ ? 1 : 2);
  if (cfg.projection != "tiedkvq") make_param(*this, "w_q", {n, D}, Init::Xavier, o);  // never read (see header)
  if (cfg.projection == "full") make_param(*this, "w_z", {n, D}, Init::Xavier, o);
  out_proj_ = make_param(*this, "out_proj", {cfg.dim, n}, Init::Normal002, o);
}

torch::Tensor E74DiagMixer::forward(const torch::Tensor& x) {
  auto proj = torch::linear(torch::linear(x, in_proj_), w_kv_);  // [B,T,n] (k = v) or [B,T,2n] = [k, v]
  if (tied_) proj = torch::cat({proj, proj}, 2);
  auto none = torch::empty({0, out_proj_.size(1)}, proj.options().dtype(torch::kFloat));  // no per-channel parameters
  auto y = ops::gated_diag(cell_, proj, none, torch::Tensor(), impl_)[0];
  return torch::linear(y, out_proj_);
}

}  // namespace elman::models
