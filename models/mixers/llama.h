// Llama block halves (spec 2.22, our decision: no double norm): causal multi-head attention with RoPE
// (theta 10000, head_dim = dim / heads, default 64) through scaled_dot_product_attention, and a SwiGLU
// MLP with hidden = round_up(8/3 dim, 256). No biases; xavier init on every projection.
#pragma once
#include "models/mixer.h"

namespace elman::models {

class LlamaAttention : public Mixer {
 public:
  explicit LlamaAttention(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  int64_t heads_, head_dim_;
  torch::Tensor wqkv_, wo_;
  torch::Tensor cos_, sin_;  // RoPE tables [T, head_dim/2], rebuilt when T or the device changes
};

class SwiGLU : public Mixer {
 public:
  explicit SwiGLU(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  torch::Tensor w_gate_up_, w_down_;
};

}  // namespace elman::models
