// Host launchers of the fused head split + RoPE kernels (ops/rope/rope.h has the math).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// qkv [B,T,3*H*hd] (f32|bf16, any strides) -> {q, k, v} [B,H,T,hd] in qkv's dtype, transposed views of
// [B,T,H,hd] storage.
std::vector<at::Tensor> rope_qkv_fwd(const at::Tensor& qkv, int64_t heads, double theta);

// The gradients of q, k, v (any dtype and strides; undefined = zero) -> dqkv [B,T,width] in dtype.
at::Tensor rope_qkv_bwd(const at::Tensor& dq, const at::Tensor& dk, const at::Tensor& dv, int64_t B, int64_t T,
                        int64_t width, int64_t heads, double theta, at::ScalarType dtype);

}  // namespace elman::cuda
