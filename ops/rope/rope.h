#pragma once
#include <torch/torch.h>

#include <vector>

#include "ops/common/impl.h"

namespace elman::ops {

// Splits a fused attention projection into heads and rotates q and k by their positions (RoPE, rotate-half):
//   qkv [B,T,3*H*hd] = [q | k | v], each [H, hd] per position -> q, k, v [B,H,T,hd] (the layout attention reads),
//   for pairs (i, i + hd/2), angle a = t * theta^(-2i/hd) for position t = 0..T-1:
//     out_i = x_i cos a - x_{i+hd/2} sin a,  out_{i+hd/2} = x_i sin a + x_{i+hd/2} cos a;  v is copied.
// Args: qkv float32 or bfloat16; heads H >= 1 with hd = size(2) / (3H) even; theta > 0.
// impl: Impl::Kernel (cuda/rope/: one pass that reads qkv once and writes q, k, v; angles in fp32) or
// Impl::Reference (rope_qkv_reference). Returns {q, k, v} in qkv's dtype, differentiable with respect to qkv
// (the kernel's are [B,H,T,hd] views of [B,T,H,hd] storage, which attention reads without a copy).
std::vector<torch::Tensor> rope_qkv(const torch::Tensor& qkv, int64_t heads, double theta, Impl impl);

// Pure LibTorch, autograd: the same math in fp32 (fp64 for fp64 inputs), rounded once to qkv's dtype.
std::vector<torch::Tensor> rope_qkv_reference(const torch::Tensor& qkv, int64_t heads, double theta);

}  // namespace elman::ops
