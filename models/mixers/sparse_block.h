// E87 sparse block memory layer (spec 1.2 with 2.21), walked by ops::sparse_block:
//   u = silu(W_in x) (D = dim * expansion, expansion 1); one GEMM of u with the weights concatenated
//   [W_kvb | W_q | W_router] gives per block j [k, v, b~] (n each; W_kvb [B_k*3n, D], each n-row block xavier on
//   its own), the shared query q (W_q [n, D], xavier) and the router logits (W_router [B_k, D], xavier);
//   b_beta [B_k, n] init 2. The op routes (rho = softmax over all blocks, w = softmax over the top K), updates
//   each block's n x n state with weight w_j and returns y = sum_j rho_j selfgate(S_j q) (n wide);
//   out = W_out y (n -> dim). W_in, W_out xavier.
// Blocks 1..32, top-K 1..blocks, n_state 1..64; anything else is an error naming --blocks, --topk or --nstate.
#pragma once
#include "models/mixer.h"

namespace elman::models {

class SparseBlockMixer : public Mixer {
 public:
  explicit SparseBlockMixer(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  ops::Impl impl_;
  int64_t blocks_, topk_, n_;
  torch::Tensor in_proj_, w_kvb_, w_q_, w_router_, b_beta_, out_proj_;
};

}  // namespace elman::models
