#include "models/mixers/delta_matrix.h"

#include <initializer_list>

#include "models/mixers/gated_diag.h"
#include "models/param.h"
#include "ops/delta_matrix/delta_matrix.h"

namespace elman::models {

DeltaMatrixMixer::DeltaMatrixMixer(const ModelConfig& cfg, DeltaCell cell)
    : cell_(cell), impl_(cfg.impl), heads_(cell == DeltaCell::E75 ? cfg.heads : 1), n_(cfg.nstate) {
  TORCH_CHECK(n_ >= 1 && n_ <= ops::kDeltaMatrixMaxNState, cfg.name, ": n_state ", n_,
              " is not supported; use --nstate from 1 to ", ops::kDeltaMatrixMaxNState);
  TORCH_CHECK(heads_ >= 1, cfg.name, ": --heads must be at least 1, got ", heads_);
  const int64_t D = static_cast<int64_t>(cfg.dim * cfg.expansion);
  TORCH_CHECK(D >= 1, cfg.name, ": dim * expansion must be at least 1");
  const auto& o = cfg.build;
  if (cell == DeltaCell::E75) {
    in_proj_ = make_param(*this, "in_proj", {D, cfg.dim}, Init::Xavier, o);
    w_proj_ = make_param(*this, "w_kvqb", {heads_ * 4 * n_, D}, Init::Xavier, o, /*xavier_blocks=*/heads_ * 4);
    b_beta_ = make_param(*this, "b_beta", {heads_, n_}, Init::Constant, o, 1, 2.0);
    out_proj_ = make_param(*this, "out_proj", {cfg.dim, heads_ * n_}, Init::Xavier, o);
  } else {
    in_proj_ = make_param(*this, "in_proj", {D, cfg.dim}, Init::Normal002, o);
    w_proj_ = make_param(*this, "w_kvq", {3 * n_, D}, Init::Xavier, o, /*xavier_blocks=*/3);
    out_proj_ = make_param(*this, "out_proj", {cfg.dim, n_}, Init::Normal002, o);
  }
}

torch::Tensor DeltaMatrixMixer::forward(const torch::Tensor& x) {
  auto u = torch::linear(x, in_proj_);
  if (cell_ == DeltaCell::E75) u = torch::silu(u);
  auto y = ops::delta_matrix(torch::linear(u, w_proj_), b_beta_, torch::Tensor(), heads_, n_, impl_)[0];
  return torch::linear(y, out_proj_);
}

MixerPtr make_e74(const ModelConfig& cfg) {
  auto check_one_of = [&](const char* key, const std::string& value, std::initializer_list<const char*> valid) {
    std::string list;
    for (const char* v : valid) {
      if (value == v) return;
      list += (list.empty() ? "" : ", ") + std::string(v);
    }
    TORCH_CHECK(false, cfg.name, ": invalid --", key, " '", value, "' (valid: ", list, ")");
  };
  check_one_of("state", cfg.state, {"full", "diagonal"});
  check_one_of("update", cfg.update, {"delta", "simple"});
  check_one_of("projection", cfg.projection, {"tiedkvq", "noz", "full"});
  check_one_of("nonlinearity", cfg.nonlinearity, {"tanh", "linear"});
  if (cfg.state == "diagonal") return std::make_shared<E74DiagMixer>(cfg);
  TORCH_CHECK(cfg.update == "delta" && cfg.projection == "noz" && cfg.nonlinearity == "tanh", cfg.name,
              " --state full runs the full-matrix kernel, which supports only --update delta --projection noz "
              "--nonlinearity tanh (got --update ", cfg.update, " --projection ", cfg.projection, " --nonlinearity ",
              cfg.nonlinearity, "); use --state diagonal for the other combinations");
  return std::make_shared<DeltaMatrixMixer>(cfg, DeltaCell::E74Full);
}

}  // namespace elman::models
