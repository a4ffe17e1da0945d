// Llama block halves (spec 2.22, our decision: no double norm): causal multi-head attention with RoPE
// (theta 10000, head_dim = dim / heads, default 64) through scaled_dot_product_attention, and a SwiGLU
// MLP with hidden = round_up(8/3 dim, 256). No biases; xavier init on every projection.
// With --impl kernel the head split + RoPE (ops/rope) and the SwiGLU gate (ops/swiglu) run as our fused kernels;
// with --impl reference as their LibTorch references.
#pragma once
#include "models/mixer.h"

namespace elman::models {

class LlamaAttention : public Mixer {
 public:
  explicit LlamaAttention(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  int64_t heads_;
  ops::Impl impl_;
  torch::Tensor wqkv_, wo_;
};

class SwiGLU : public Mixer {
 public:
  explicit SwiGLU(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  ops::Impl impl_;
  torch::Tensor w_gate_up_, w_down_;
};

}  // namespace elman::models
