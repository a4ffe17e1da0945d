// E61 decay-gated Elman layer (spec 1.2 + 2.5):
//   x -> in_proj (dim -> D) -> SiLU -> [W_alpha; W_v] (one GEMM, D -> 2D) -> E61 scan -> out_proj (D -> dim)
// D = dim * expansion. Init: in/out proj, W_alpha, W_v xavier (each separately); b_alpha = 2, b_v = 0.
#pragma once
#include "models/mixer.h"

namespace elman::models {

class E61Mixer : public Mixer {
 public:
  explicit E61Mixer(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  ops::Impl impl_;
  torch::Tensor in_proj_, w_av_, b_alpha_, b_v_, out_proj_;
};

}  // namespace elman::models
