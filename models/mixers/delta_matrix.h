// Delta-rule matrix-state layers (spec 1.2 / 1.3 with 2.18 and 2.20), walked by ops::delta_matrix:
//   E75  u = silu(W_in x) (D = dim * expansion, expansion 1); per head h of H: [k, v, q, b~] = W_h u (n each;
//        one fused GEMM [H*4n, D], each n-row block xavier on its own); beta = sigmoid(b~ + b_beta[h])
//        (b_beta init 2); S = tanh(diag(beta) S + (v - S khat) khat^T); y_h = selfgate(S q);
//        out = W_out [y_1 .. y_H] (H*n -> dim). W_in, W_out xavier.
//   E74  full matrix, delta update, no_z projections, tanh (the configuration that ran): u = W_in x (no SiLU,
//        D = 2 dim); [k, v, q] = W u (one GEMM [3n, D], each block xavier); S = tanh(S + (v - S khat) khat^T);
//        y = selfgate(S q); out = W_out y (n -> dim). W_in, W_out N(0, 0.02).
// n_state from 1 to 64; anything else is an error naming --nstate.
#pragma once
#include "models/mixer.h"

namespace elman::models {

enum class DeltaCell { E74Full, E75 };

class DeltaMatrixMixer : public Mixer {
 public:
  DeltaMatrixMixer(const ModelConfig& cfg, DeltaCell cell);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  DeltaCell cell_;
  ops::Impl impl_;
  int64_t heads_, n_;
  torch::Tensor in_proj_, w_proj_, b_beta_, out_proj_;
};

// The e74 registry line: checks the cell options (ModelConfig::state, update, projection, nonlinearity)
// and builds the full-matrix layer (state full: delta, noz, tanh only) or E74DiagMixer (state diagonal).
MixerPtr make_e74(const ModelConfig& cfg);

template <DeltaCell kCell>
MixerPtr make_delta_matrix(const ModelConfig& cfg) {
  return std::make_shared<DeltaMatrixMixer>(cfg, kCell);
}

}  // namespace elman::models
