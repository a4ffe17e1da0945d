#pragma once
#include <torch/torch.h>

#include "ops/common/impl.h"

namespace elman::ops {

// The SwiGLU gate of the Llama MLP: gu [..., 2h] = [gate | up] -> silu(gate) * up [..., h].
// gu float32 or bfloat16. impl: Impl::Kernel (cuda/swiglu/: one pass, fp32 math, fused backward) or
// Impl::Reference (swiglu_reference). The result has gu's dtype and is differentiable with respect to gu.
torch::Tensor swiglu(const torch::Tensor& gu, Impl impl);

// Pure LibTorch, autograd: the same math in fp32 (fp64 for fp64 inputs), rounded once to gu's dtype.
torch::Tensor swiglu_reference(const torch::Tensor& gu);

// The self-gate of the dense Elman cells' outputs (E42, E63, E66): x -> x * silu(x), same shape and dtype.
// x float32 or bfloat16. impl: Impl::Kernel (cuda/swiglu/: one pass each way, fp32 math) or Impl::Reference
// (selfgate_reference). Differentiable with respect to x.
torch::Tensor selfgate(const torch::Tensor& x, Impl impl);

// Pure LibTorch, autograd: x * silu(x) in fp32 (fp64 for fp64 inputs), rounded once to x's dtype.
torch::Tensor selfgate_reference(const torch::Tensor& x);

}  // namespace elman::ops
