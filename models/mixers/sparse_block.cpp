#include "models/mixers/sparse_block.h"

#include "models/param.h"
#include "ops/sparse_block/sparse_block.h"

namespace elman::models {

SparseBlockMixer::SparseBlockMixer(const ModelConfig& cfg)
    : impl_(cfg.impl), blocks_(cfg.blocks), topk_(cfg.topk), n_(cfg.nstate) {
  TORCH_CHECK(blocks_ >= 1 && blocks_ <= ops::kSparseBlockMaxBlocks, cfg.name, ": --blocks ", blocks_,
              " is not supported; use --blocks from 1 to ", ops::kSparseBlockMaxBlocks);
  TORCH_CHECK(topk_ >= 1 && topk_ <= blocks_, cfg.name, ": --topk ", topk_, " is not supported with ", blocks_,
              " blocks; use --topk from 1 to the block count ", blocks_);
  TORCH_CHECK(n_ >= 1 && n_ <= ops::kSparseBlockMaxNState, cfg.name, ": n_state ", n_,
              " is not supported; use --nstate from 1 to ", ops::kSparseBlockMaxNState);
  const int64_t D = static_cast<int64_t>(cfg.dim * cfg.expansion);
  TORCH_CHECK(D >= 1, cfg.name, ": dim * expansion must be at least 1");
  const auto& o = cfg.build;
  in_proj_ = make_param(*this, "in_proj", {D, cfg.dim}, Init::Xavier, o);
  w_kvb_ = make_param(*this, "w_kvb", {blocks_ * 3 * n_, D}, Init::Xavier, o, /*xavier_blocks=*/blocks_ * 3);
  w_q_ = make_param(*this, "w_q", {n_, D}, Init::Xavier, o);
  w_router_ = make_param(*this, "w_router", {blocks_, D}, Init::Xavier, o);
  b_beta_ = make_param(*this, "b_beta", {blocks_, n_}, Init::Constant, o, 1, 2.0);
  out_proj_ = make_param(*this, "out_proj", {cfg.dim, n_}, Init::Xavier, o);
}

torch::Tensor SparseBlockMixer::forward(const torch::Tensor& x) {
  auto u = torch::silu(torch::linear(x, in_proj_));
  auto proj = torch::linear(u, torch::cat({w_kvb_, w_q_, w_router_}, 0));  // [k v b~ per block | q | logits]
  auto y = ops::sparse_block(proj, b_beta_, torch::Tensor(), blocks_, topk_, n_, impl_)[0];
  return torch::linear(y, out_proj_);
}

}  // namespace elman::models
