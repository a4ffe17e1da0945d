#pragma once
#include <torch/torch.h>

#include <vector>

#include "ops/common/impl.h"
#include "ops/dense_elman/reference.h"

namespace elman::ops {

// Dense Elman recurrence over T with a full D x D recurrent matrix (the recurrence is written out in
// reference.h). The callers do the input projections as GEMMs; this op only walks the recurrence:
//   z_t = pre_t + W h_{t-1}   ((W h)[j] = sum_k W[j,k] h[k], W is [D_out = D, D_in = D])
//   Tanh: h_t = tanh(z_t)   Linear: h_t = z_t
//   GatedTanh: alpha_t = sigmoid(apre_t), h_t = alpha_t h_{t-1} + (1 - alpha_t) tanh(z_t)
// (E1/E56 use Tanh with an output gate applied outside; E42 Linear; E63 and E66 GatedTanh, E66 passing
// W = U V formed outside; E42, E63 and E66 self-gate the output with ops::selfgate.)
//
// Args:
//   pre    [B,T,D] float32 or bfloat16: the input projections (with bias).
//   W      [D,D] any float dtype, used as given (fp32 master weights or bf16) and computed with in fp32.
//   apre   [B,T,D] gate pre-activations for GatedTanh (converted to pre's dtype by the kernel); must be
//          undefined for Tanh and Linear.
//   h0     [B,D] initial state (any float dtype), or an undefined tensor for zeros.
//   mode   DenseMode::Tanh, Linear or GatedTanh.
//   impl   Impl::Kernel runs our CUDA kernels (CUDA tensors, a CUDA build); Impl::Reference runs
//          dense_elman_reference. Asking for the kernel where it cannot run throws.
// Returns {h [B,T,D] in pre's dtype: every state h_1..h_T, h_T [B,D] float32}. Differentiable with respect
// to pre, W, apre and h0, with gradients flowing in from both outputs (either may be unused).
// Gradients come back in each input's dtype (dW in W's dtype, accumulated in fp32).
// The kernel is one persistent cooperative launch per direction: each block owns a slice of rows of W
// (forward) or of W^T (backward) for all T and for one group of batch rows, the state and the carried gradient
// are fp32, and one barrier per batch group separates the steps. It saves the fp32 state history [B,T,D] (plus
// tanh(z) for GatedTanh) and the output h for the backward pass, and forms dW = sum_t dz_t^T h_{t-1} as one GEMM
// afterwards. fp32 inputs compute in fp32
// throughout. bf16 inputs compute W h_{t-1}, W^T dz_t and dW as bf16 x bf16 tensor-core products with fp32
// accumulation (as under bf16 autocast): W rounded to bf16, the state and dz broadcast as the bf16 values of
// the outputs h and dpre, while the recurrence itself stays fp32 (README.md in this folder has the design
// and measurements). D is limited to about 16 x the SM count (2112 on an H100); larger D throws.
std::vector<torch::Tensor> dense_elman(const torch::Tensor& pre, const torch::Tensor& W, const torch::Tensor& apre,
                                       const torch::Tensor& h0, DenseMode mode, Impl impl);

}  // namespace elman::ops
