#include "models/mixers/llama.h"

#include "models/param.h"

namespace elman::models {

LlamaAttention::LlamaAttention(const ModelConfig& cfg) {
  TORCH_CHECK(cfg.heads > 0 || cfg.dim % 64 == 0, "llama: dim ", cfg.dim,
              " must be a multiple of 64 (head_dim 64 by default), or set --heads to a divisor of it");
  heads_ = cfg.heads > 0 ? cfg.heads : cfg.dim / 64;
  TORCH_CHECK(cfg.dim % heads_ == 0, "llama: dim ", cfg.dim, " must be a multiple of the head count ", heads_);
  head_dim_ = cfg.dim / heads_;
  TORCH_CHECK(head_dim_ % 2 == 0, "llama: head_dim ", head_dim_, " must be even for RoPE");
  wqkv_ = make_param(*this, "wqkv", {3 * cfg.dim, cfg.dim}, Init::Xavier, cfg.build, 3);
  wo_ = make_param(*this, "wo", {cfg.dim, cfg.dim}, Init::Xavier, cfg.build);
}

torch::Tensor LlamaAttention::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  auto qkv = torch::linear(x, wqkv_).view({B, T, 3, heads_, head_dim_}).permute({2, 0, 3, 1, 4});
  auto q = qkv[0], k = qkv[1], v = qkv[2];  // [B,H,T,hd]
  if (!cos_.defined() || cos_.size(0) != T || cos_.device() != x.device()) {
    auto inv = torch::pow(10000.0, -torch::arange(0, head_dim_, 2, x.options().dtype(torch::kFloat)) / head_dim_);
    auto ang = torch::outer(torch::arange(T, inv.options()), inv);  // [T, hd/2]
    cos_ = ang.cos(), sin_ = ang.sin();
  }
  auto rope = [&](const torch::Tensor& t) {
    auto c = cos_.to(t.scalar_type()), s = sin_.to(t.scalar_type());
    auto halves = t.chunk(2, -1);
    return torch::cat({halves[0] * c - halves[1] * s, halves[0] * s + halves[1] * c}, -1);
  };
  auto o = at::scaled_dot_product_attention(rope(q), rope(k), v, {}, 0.0, /*is_causal=*/true);
  return torch::linear(o.transpose(1, 2).reshape({B, T, C}), wo_);
}

SwiGLU::SwiGLU(const ModelConfig& cfg) {
  const int64_t hidden = ((8 * cfg.dim + 2) / 3 + 255) / 256 * 256;  // round_up(8/3 dim, 256)
  w_gate_up_ = make_param(*this, "w_gate_up", {2 * hidden, cfg.dim}, Init::Xavier, cfg.build, 2);
  w_down_ = make_param(*this, "w_down", {cfg.dim, hidden}, Init::Xavier, cfg.build);
}

torch::Tensor SwiGLU::forward(const torch::Tensor& x) {
  auto gu = torch::linear(x, w_gate_up_).chunk(2, -1);
  return torch::linear(torch::silu(gu[0]) * gu[1], w_down_);
}

}  // namespace elman::models
