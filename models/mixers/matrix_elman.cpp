#include "models/mixers/matrix_elman.h"

#include "models/key_norm.h"
#include "models/param.h"
#include "models/spectral_norm.h"
#include "ops/matrix_elman/matrix_elman.h"

namespace elman::models {

MatrixElmanMixer::MatrixElmanMixer(const ModelConfig& cfg, ops::MatrixCell cell)
    : cell_(cell), impl_(cfg.impl), n_(cfg.nstate), key_l2_(key_is_l2(cfg)) {
  TORCH_CHECK(n_ >= 1 && n_ <= ops::kMatrixElmanMaxNState, cfg.name, ": n_state ", n_,
              " is not supported; use --nstate from 1 to ", ops::kMatrixElmanMaxNState);
  const int64_t D = static_cast<int64_t>(cfg.dim * cfg.expansion);
  TORCH_CHECK(D >= 1, cfg.name, ": dim * expansion must be at least 1");
  const auto& info = ops::matrix_cell_info(cell);
  const auto& o = cfg.build;
  const char* w_name = cell == ops::MatrixCell::E70 ? "w_kvq" : cell == ops::MatrixCell::E73 ? "w_kvqz" : "w_kvqa";
  in_proj_ = make_param(*this, "in_proj", {D, cfg.dim}, Init::Xavier, o);
  w_proj_ = make_param(*this, w_name, {info.projections * n_, D}, Init::Xavier, o, /*xavier_blocks=*/info.projections);
  if (cell == ops::MatrixCell::E70) {
    decay_ = make_param(*this, "decay", {1}, Init::Constant, o, 1, info.params[0].second);
    spectral_u_k_ = make_spectral_u(*this, "w_k", n_, o);
    spectral_u_v_ = make_spectral_u(*this, "w_v", n_, o);
  } else {
    for (const auto& [name, value] : info.params)
      row_params_.push_back(make_param(*this, name, {n_}, Init::Constant, o, 1, value));
  }
  out_proj_ = make_param(*this, "out_proj", {cfg.dim, n_}, Init::Xavier, o);
}

torch::Tensor MatrixElmanMixer::forward(const torch::Tensor& x) {
  auto u = torch::silu(torch::linear(x, in_proj_));
  auto W = w_proj_;
  torch::Tensor w;
  if (cell_ == ops::MatrixCell::E70) {
    const int64_t n = n_;
    W = torch::cat({spectral_normalize(w_proj_.narrow(0, 0, n), spectral_u_k_, 0.5, is_training()),
                    spectral_normalize(w_proj_.narrow(0, n, n), spectral_u_v_, 0.5, is_training()),
                    w_proj_.narrow(0, 2 * n, n)});
    w = decay_.view({1, 1}).expand({1, n});
  } else {
    w = torch::stack(row_params_);
  }
  auto proj = torch::linear(u, W);  // [k | v | q (| a or z~)]
  if (key_l2_) proj = l2_normalize_key(proj, n_);
  auto y = ops::matrix_elman(cell_, proj, w, torch::Tensor(), n_, impl_)[0];
  return torch::linear(y, out_proj_);
}

}  // namespace elman::models
