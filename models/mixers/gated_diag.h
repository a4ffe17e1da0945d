// Gated-diagonal Elman layer (spec 1.2 with the cells of ops/gated_diag/cells.h: E61, E62, E64, E65, E67, E68):
//   x -> in_proj (dim -> D) -> SiLU -> [W_1; W_2] (one GEMM, D -> 2D) -> gated-diagonal scan -> out_proj (D -> dim)
// D = dim * expansion. Init: in/out proj, W_1, W_2 xavier (each separately); per-channel parameters as in
// cells.h (e.g. E61 b_alpha = 2, b_v = 0).
#pragma once
#include "models/mixer.h"
#include "ops/gated_diag/cells.h"

namespace elman::models {

class GatedDiagMixer : public Mixer {
 public:
  GatedDiagMixer(const ModelConfig& cfg, ops::DiagCell cell);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  ops::DiagCell cell_;
  ops::Impl impl_;
  torch::Tensor in_proj_, w_proj_, out_proj_;
  std::vector<torch::Tensor> channel_params_;  // cells.h order
};

template <ops::DiagCell kCell>
MixerPtr make_gated_diag(const ModelConfig& cfg) {
  return std::make_shared<GatedDiagMixer>(cfg, kCell);
}

}  // namespace elman::models
