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

}  // namespace elman::models
