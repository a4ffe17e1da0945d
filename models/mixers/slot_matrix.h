// E63m slot-matrix nonlinear layer (spec 1.2 with 2.8, variant 'full'), walked by ops::slot_matrix:
//   u = silu(W_in x) (D = dim * expansion); [k | q | W_x u | W_alpha u] = [W_k; W_q; W_x; W_alpha] u in one GEMM
//   (w_kq [2D, D]: W_k, W_q; w_xa [2N, D]: W_x, W_alpha; each of the four xavier on its own);
//   N slots x D state: r = tanh(S k), v = tanh(W_r r + W_x u + b), alpha = sigmoid(W_alpha u + b_alpha),
//   S = diag(alpha) S + diag(1 - alpha) v k^T, y = tanh(S q); out = W_out y (N -> dim).
//   W_r [N,N] orthogonal x 0.5, b 0, b_alpha 2; W_in, W_out xavier.
// Slots from 1 to 16 (--slots, default 8 as in the reported runs); anything else is an error naming --slots. With
// --impl kernel, D is also limited by the kernel's register budget (checked at construction). --key l2 (the
// default; models/key_norm.h) divides k by its L2 norm before the cell: with the raw key E63m diverges.
#pragma once
#include "models/mixer.h"

namespace elman::models {

class SlotMatrixMixer : public Mixer {
 public:
  explicit SlotMatrixMixer(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  ops::Impl impl_;
  int64_t slots_;
  bool key_l2_;  // --key l2: k L2-normalised before the cell (models/key_norm.h)
  torch::Tensor in_proj_, w_kq_, w_xa_, w_r_, b_, b_alpha_, out_proj_;
};

}  // namespace elman::models
