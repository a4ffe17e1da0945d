#include "models/mixers/llama.h"

#include "models/param.h"
#include "ops/rope/rope.h"
#include "ops/swiglu/swiglu.h"

namespace elman::models {

LlamaAttention::LlamaAttention(const ModelConfig& cfg) : impl_(cfg.impl) {
  TORCH_CHECK(cfg.heads > 0 || cfg.dim % 64 == 0, "llama: dim ", cfg.dim,
              " must be a multiple of 64 (head_dim 64 by default), or set --heads to a divisor of it");
  heads_ = cfg.heads > 0 ? cfg.heads : cfg.dim / 64;
  TORCH_CHECK(cfg.dim % heads_ == 0, "llama: dim ", cfg.dim, " must be a multiple of the head count ", heads_);
  TORCH_CHECK((cfg.dim / heads_) % 2 == 0, "llama: head_dim ", cfg.dim / heads_, " must be even for RoPE");
  wqkv_ = make_param(*this, "wqkv", {3 * cfg.dim, cfg.dim}, Init::Xavier, cfg.build, 3);
  wo_ = make_param(*this, "wo", {cfg.dim, cfg.dim}, Init::Xavier, cfg.build);
}

torch::Tensor LlamaAttention::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  auto qkv = ops::rope_qkv(models::linear(x, wqkv_), heads_, 10000.0, impl_);  // q, k, v [B,H,T,hd]
  auto o = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], {}, 0.0, /*is_causal=*/true);
  return models::linear(o.transpose(1, 2).reshape({B, T, C}), wo_);
}

SwiGLU::SwiGLU(const ModelConfig& cfg) : impl_(cfg.impl) {
  const int64_t hidden = ((8 * cfg.dim + 2) / 3 + 255) / 256 * 256;  // round_up(8/3 dim, 256)
  w_gate_up_ = make_param(*this, "w_gate_up", {2 * hidden, cfg.dim}, Init::Xavier, cfg.build, 2);
  w_down_ = make_param(*this, "w_down", {cfg.dim, hidden}, Init::Xavier, cfg.build);
}

torch::Tensor SwiGLU::forward(const torch::Tensor& x) {
  return models::linear(ops::swiglu(models::linear(x, w_gate_up_), impl_), w_down_);
}

}  // namespace elman::models
