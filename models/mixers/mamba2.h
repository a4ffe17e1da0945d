// Mamba2 layer (spec 2.22 H1, our decision 2): d_state N = 128, headdim P = 64, expand 2, ngroups 1.
//   in_proj (dim -> [z | x | B | C | dt_raw], widths [Di, Di, N, N, H], Di = 2 dim, H = Di / P, no bias)
//   xBC = SiLU(depthwise causal conv1d over [x | B | C], width 4, with bias)
//   dt = softplus(dt_raw + dt_bias),  A = -exp(A_log)
//   y = SSD scan (ops/ssd: h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t + D x_t, per head)
//   out = out_proj(RMSNorm(y * SiLU(z)) with weight, eps 1e-5)  (no bias)
// Init: in/out_proj and the conv like torch's Linear/Conv1d defaults, U(+-1/sqrt(fan_in)); dt_bias = inverse
// softplus of dt ~ log-uniform [1e-3, 1e-1] (floored at 1e-4); A_log = log U[1, 16]; D = 1; norm weight 1.
// The conv (ops/short_conv: conv + SiLU in one op, reading xBC in place in in_proj's output) and the gated norm
// (ops/gated_norm, GateThenNorm) run our kernels under --impl kernel, else their LibTorch references (as the LM's
// norms do). The projections run in the autocast dtype, the conv reads and writes it (fp32 math), the scan takes
// x, B, C in it (fp32 inside); dt and A run in fp32; the norm computes in fp32 and hands out_proj the autocast dtype.
#pragma once
#include "models/mixer.h"

namespace elman::models {

class Mamba2Mixer : public Mixer {
 public:
  static constexpr int64_t kDState = 128, kHeadDim = 64, kExpand = 2, kConvWidth = 4;

  explicit Mamba2Mixer(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x) override;

 private:
  ops::Impl impl_;        // the SSD scan: kernel, chunked or reference
  ops::Impl fused_impl_;  // the conv and the gated norm: Kernel under --impl kernel, else Reference
  int64_t d_inner_, heads_;
  torch::Tensor in_proj_, conv_weight_, conv_bias_, dt_bias_, A_log_, D_, norm_, out_proj_;
};

}  // namespace elman::models
