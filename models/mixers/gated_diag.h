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

// E74 diagonal layer (spec 1.3 layer, 2.19 cell), with the cell options of ModelConfig (state diagonal):
//   u = W_in x (no SiLU, D = dim * expansion) -> [k, v] -> s = f(c s + v k) per state dim (n = n_state,
//   k not normalised; c = 1 - k^2 for --update delta, 0.9 for simple; f = tanh or identity)
//   -> y = selfgate(s) -> out = W_out y (n -> dim). W_in, W_out N(0, 0.02); cell weights xavier per n-row block.
// Projections: tiedkvq one W (n x D) with k = v = W u; noz and full W_kv (2n x D) giving k and v.
// The reference's cell also built W_q (noz, full) and W_z (full) and discarded q and z; they are kept here
// as parameters w_q, w_z so the seed configurations have the reference's exact parameter counts
// (spec section 4), but are never computed: they get no gradient. Every weight the cell reads trains
// (the reference connected no backward). --update delta with --nonlinearity linear is refused (cells.h).
class E74DiagMixer : public Mixer {
 public:
  explicit E74DiagMixer(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  ops::DiagCell cell_;
  ops::Impl impl_;
  bool tied_;
  torch::Tensor in_proj_, w_kv_, out_proj_;  // w_kv_ is w_k [n,D] when tied
};

template <ops::DiagCell kCell>
MixerPtr make_gated_diag(const ModelConfig& cfg) {
  return std::make_shared<GatedDiagMixer>(cfg, kCell);
}

}  // namespace elman::models
