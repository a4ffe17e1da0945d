// The byte-level language model scaffold (spec section 1.1):
//   embedding (256 x dim, N(0, 0.02), tied to the output head)
//   -> depth x [ residual += mixer(norm(residual)) ; optional: residual += mlp(norm(residual)) ]
//   -> final norm -> logits = h E^T.
// The residual stream stays fp32 under bf16 autocast. The norm is the model's (ModelSpec::norm): RMSNorm with a
// weight only (init 1) for most models, LayerNorm with weight (init 1) and bias (init 0) for Mamba2; eps 1e-5.
// RMSNorm runs fused with the residual add before it (ops/rms_norm): our kernel when the model runs --impl kernel,
// its LibTorch reference otherwise; it hands the branches their input in the autocast dtype.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/mixer.h"
#include "models/model_config.h"
#include "models/registry.h"

namespace elman::models {

// One block's parameters and sub-modules: residual += mixer(norm(residual)), then optionally
// residual += mlp(mlp_norm(residual)). LMImpl::forward walks the blocks (it fuses each residual add with the
// next norm).
struct Block : public torch::nn::Module {
  Block(const ModelConfig& cfg, Norm norm, const MixerPtr& mixer, const MixerPtr& mlp);
  torch::Tensor norm, norm_bias, mlp_norm, mlp_norm_bias;  // biases: LayerNorm only
  MixerPtr mixer, mlp;
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
  Norm norm_kind_;
  ops::Impl norm_impl_;
  torch::Tensor embedding_, final_norm_, final_norm_bias_;
  std::vector<std::shared_ptr<Block>> blocks_;
};
TORCH_MODULE(LM);

}  // namespace elman::models
