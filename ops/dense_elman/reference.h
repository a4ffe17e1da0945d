// Dense Elman recurrence (a full D x D recurrent matrix): the pure-LibTorch reference, which is the spec.
//
//   z_t = pre_t + W h_{t-1}                 (W h)[j] = sum_k W[j,k] h[k];  W is [D_out = D, D_in = D]
//   Tanh:       h_t = tanh(z_t)
//   Linear:     h_t = z_t
//   GatedTanh:  alpha_t = sigmoid(apre_t),  h_t = alpha_t * h_{t-1} + (1 - alpha_t) * tanh(z_t)
//
// The input projections (pre = W_x x + b, apre = W_a x + b_a) are GEMMs done by the caller; this op only
// walks the recurrence.
// Shapes: pre [B,T,D], W [D,D], apre [B,T,D] (GatedTanh only; undefined otherwise), h0 [B,D] (undefined =
// zeros). Returns {h [B,T,D] in pre's dtype (every state h_1..h_T), h_T [B,D] fp32}. Computes in fp32 (fp64
// for fp64 inputs, where h_T is fp64 too) with an explicit loop over T; differentiable through LibTorch
// autograd with respect to every input.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace elman::ops {

// The numeric values are part of the kernel interface (cuda/dense_elman/dense_elman.h): keep them.
enum class DenseMode { Tanh = 0, Linear = 1, GatedTanh = 2 };

inline const char* dense_mode_name(DenseMode mode) {
  switch (mode) {
    case DenseMode::Tanh: return "tanh";
    case DenseMode::Linear: return "linear";
    case DenseMode::GatedTanh: return "gated_tanh";
  }
  return "?";
}

// Checks shapes and dtypes shared by both implementations (throws with a message naming the argument).
void check_dense_elman_args(const torch::Tensor& pre, const torch::Tensor& W, const torch::Tensor& apre,
                            const torch::Tensor& h0, DenseMode mode);

std::vector<torch::Tensor> dense_elman_reference(const torch::Tensor& pre, const torch::Tensor& W,
                                                 const torch::Tensor& apre, const torch::Tensor& h0, DenseMode mode);

}  // namespace elman::ops
