// GatedDeltaNet layer (spec 2.22 FLA-GDN H1, our decision 2): the FLA GatedDeltaNet layer with use_gate,
// short conv 4 and no MLP. H heads (default dim / 128), key head dim K = dim / H, value head dim V = 2 K.
//   in_proj (dim -> [q | k | v | gate | a | b], widths [H K, H K, H V, H V, H, H], no bias)
//       = FLA's q_proj, k_proj, v_proj, g_proj, a_proj, b_proj stacked as row blocks (one GEMM)
//   q, k, v = SiLU(depthwise causal conv1d, width 4, no bias), each per channel (FLA's q/k/v_conv1d, stacked)
//   q = l2norm(q) / sqrt(K), k = l2norm(k) per head (x / sqrt(sum x^2 + 1e-6))
//   beta = sigmoid(b),  g = -exp(A_log) softplus(a + dt_bias)   (log decay per step and head)
//   o = gated delta rule (ops/gated_delta: S_t = exp(g_t) S_{t-1} + k_t u_t^T, o_t = S_t^T q_t, per head)
//   out = out_proj(RMSNorm_V(o) * weight * SiLU(gate))  (gated RMSNorm over each head's V values, eps 1e-5)
// Init: in/out_proj and the conv like torch's Linear/Conv1d defaults, U(+-1/sqrt(fan_in)); A_log = log U(0, 16);
// dt_bias = inverse softplus of dt ~ log-uniform [1e-3, 1e-1] (floored at 1e-4); norm weight 1.
// Per layer: dim (2 H K + 2 H V + 2 H) + 4 (2 H K + H V) + 2 H + V + H V dim parameters.
// The conv (ops/short_conv: conv + SiLU in one op, reading q, k, v in place in in_proj's output) and the output norm
// (ops/gated_norm, NormThenGate, one row per head) run our kernels under --impl kernel, else their LibTorch
// references (as the LM's norms do). The conv and projections run in the autocast dtype (the conv's math in fp32);
// the normalisation and gates in fp32; the output norm computes in fp32 and hands out_proj the autocast dtype.
#pragma once
#include "models/mixer.h"

namespace elman::models {

class GatedDeltaNetMixer : public Mixer {
 public:
  static constexpr int64_t kKeyHeadDim = 128, kExpandV = 2, kConvWidth = 4;

  explicit GatedDeltaNetMixer(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  ops::Impl impl_;        // the gated delta rule: kernel, chunked or reference
  ops::Impl fused_impl_;  // the conv and the gated norm: Kernel under --impl kernel, else Reference
  int64_t heads_, dk_, dv_;
  torch::Tensor in_proj_, conv_weight_, A_log_, dt_bias_, o_norm_, out_proj_;
};

}  // namespace elman::models
