// Matrix-state Elman layers E70-E73 (spec 1.2 with 2.14-2.17), walked by ops::matrix_elman (cells in
// ops/matrix_elman/cells.h):
//   x -> in_proj (dim -> D) -> SiLU -> W (one GEMM, D -> P n: [k | v | q] for E70, [k | v | q | a or z~] for
//   E71-E73) -> matrix recurrence over an n x n state -> y = selfgate(S q) (n) -> out_proj (n -> dim)
// D = dim * expansion, n = n_state (1..128; anything else is an error naming --nstate). Init (spec 1.2): in/out
// proj xavier, W xavier per n-row block; per-row parameters as in cells.h (E71 b_alpha 2, d_alpha 0.1; E72
// b_alpha 2, d_g 0.5, b_g 0; E73 b_z 1). E70: W_k and W_v are spectrally normalised to 0.5 (spec 2.1; the power
// iteration vectors are buffers), and the decay is ONE trained scalar (init 0.9, lambda = clamp(decay, 0, 0.999),
// our decision: the reference passed it as a constant), expanded over the rows for the op. --key l2 divides k
// by its L2 norm before the cell (models/key_norm.h; default for E71 and E72, whose raw key diverges).
#pragma once
#include "models/mixer.h"
#include "ops/matrix_elman/cells.h"

namespace elman::models {

class MatrixElmanMixer : public Mixer {
 public:
  MatrixElmanMixer(const ModelConfig& cfg, ops::MatrixCell cell);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  ops::MatrixCell cell_;
  ops::Impl impl_;
  int64_t n_;
  bool key_l2_;  // --key l2: k L2-normalised before the cell (models/key_norm.h)
  torch::Tensor in_proj_, w_proj_, out_proj_, decay_, spectral_u_k_, spectral_u_v_;
  std::vector<torch::Tensor> row_params_;  // cells.h order (E71-E73)
};

template <ops::MatrixCell kCell>
MixerPtr make_matrix_elman(const ModelConfig& cfg) {
  return std::make_shared<MatrixElmanMixer>(cfg, kCell);
}

}  // namespace elman::models
