// Dense-recurrence Elman layers: the state is mixed by a full D x D matrix each step (spec 1.2 with 2.2,
// 2.3, 2.4, 2.7, 2.11), walked by ops::dense_elman. D = dim * expansion.
//   E1   [x~, z] = W_in u, x = silu(x~); h = tanh(W_x x + W^_h h + b); y = h * silu(z)
//        (W^_h spectrally normalised to 0.99; W_h xavier gain 0.1)
//   E42  x = silu(W_in u); h = W^ x + W^ h + b (linear, one tied W^ normalised to 0.999); y = selfgate(h)
//   E56  as E1 with one W = [W_x | W_h] (D x 2D, xavier over the whole matrix), no spectral norm
//   E63  x = silu(W_in u); alpha = sigma(W_alpha x + b_alpha); h = alpha h + (1 - alpha) tanh(W_h h + W_x x + b);
//        y = selfgate(h)   (W_h orthogonal x 0.5, b_alpha = 2)
//   E66  as E63 with W_h = U V of rank r = max(D/4, 16) (U, V orthogonal x 0.5)
#pragma once
#include "models/mixer.h"

namespace elman::models {

enum class DenseCell { E1, E42, E56, E63, E66 };

class DenseElmanMixer : public Mixer {
 public:
  DenseElmanMixer(const ModelConfig& cfg, DenseCell cell);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  DenseCell cell_;
  bool output_gate_;  // E1, E56: in_proj also gives z, and y = h * silu(z)
  ops::Impl impl_;
  int64_t D_;
  torch::Tensor in_proj_, w_x_, w_h_, b_, b_alpha_, u_, v_, spectral_u_, out_proj_;
};

template <DenseCell kCell>
MixerPtr make_dense_elman(const ModelConfig& cfg) {
  return std::make_shared<DenseElmanMixer>(cfg, kCell);
}

}  // namespace elman::models
