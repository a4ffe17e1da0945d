// The byte-level language model scaffold (spec section 1.1):
//   embedding (256 x dim, N(0, 0.02), tied to the output head)
//   -> depth x [ residual += mixer(RMSNorm(residual)) ; optional: residual += mlp(RMSNorm(residual)) ]
//   -> final RMSNorm -> logits = h E^T.
// The residual stream stays fp32 under bf16 autocast; RMSNorm has a weight only (init 1, eps 1e-5).
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/mixer.h"
#include "models/model_config.h"

namespace elman::models {

// One block: residual += mixer(norm(residual)), then optionally residual += mlp(mlp_norm(residual)).
class Block : public torch::nn::Module {
 public:
  Block(const ModelConfig& cfg, const MixerPtr& mixer, const MixerPtr& mlp);
  torch::Tensor forward(const torch::Tensor& residual);

 private:
  torch::Tensor norm_, mlp_norm_;
  MixerPtr mixer_, mlp_;
};

class LMImpl : public torch::nn::Module {
 public:
  explicit LMImpl(const ModelConfig& cfg);

  torch::Tensor forward(const torch::Tensor& tokens);  // [B,T] int64 -> logits [B,T,256]
  // Mean cross-entropy of next-byte prediction: inputs [B,T], targets [B,T].
  torch::Tensor loss(const torch::Tensor& inputs, const torch::Tensor& targets);

  const ModelConfig& config() const { return cfg_; }
  int64_t num_params() const;

 private:
  ModelConfig cfg_;
  torch::Tensor embedding_, final_norm_;
  std::vector<std::shared_ptr<Block>> blocks_;
};
TORCH_MODULE(LM);

}  // namespace elman::models
