// Device math of the gated-diagonal cells (ops/gated_diag/cells.h has the recurrences). Each cell gives
//   fwd(hp, a, p, w)                  -> h_t                 (hp = h_{t-1}, w = per-channel parameters)
//   bwd(G, hp, a, p, w, da, dp, dw)   -> dL/dh_{t-1} through this step; da, dp = grads of the two
//                                        projections; dw[i] += grads of the parameters.
// G is dL/dh_t (the output's selfgate gradient plus the carried gradient).
#pragma once
#include "cuda/common/sigmoid.cuh"

namespace elman::cuda {

// Precise sigmoid (cuda/common/sigmoid.cuh) and tanhf, no fast-math: fp32 results agree with the LibTorch reference
// to ~1e-6.

struct CellE61 {
  static constexpr int P = 2;
  __device__ static float fwd(float hp, float a, float p, const float* w) {
    const float al = sigmoid(a + w[0]);
    return al * hp + (1.f - al) * (p + w[1]);
  }
  __device__ static float bwd(float G, float hp, float a, float p, const float* w, float& da, float& dp, float* dw) {
    const float al = sigmoid(a + w[0]);
    da = G * (hp - (p + w[1])) * al * (1.f - al);
    dp = G * (1.f - al);
    dw[0] += da, dw[1] += dp;
    return G * al;
  }
};

struct CellE62 {
  static constexpr int P = 2;
  __device__ static float fwd(float hp, float a, float p, const float* w) {
    const float k = sigmoid(a + w[0]);
    return (1.f - k) * hp + k * tanhf(p + w[1]);
  }
  __device__ static float bwd(float G, float hp, float a, float p, const float* w, float& da, float& dp, float* dw) {
    const float k = sigmoid(a + w[0]), v = tanhf(p + w[1]);
    da = G * (v - hp) * k * (1.f - k);
    dp = G * k * (1.f - v * v);
    dw[0] += da, dw[1] += dp;
    return G * (1.f - k);
  }
};

// E64 (d = 1, no parameter) and E65 (d = w[2]): v = tanh(d hp + p + b).
template <bool kLearnedD>
struct CellAdditiveH {
  static constexpr int P = kLearnedD ? 3 : 2;
  __device__ static float d_of(const float* w) {
    if constexpr (kLearnedD) return w[2];
    return 1.f;
  }
  __device__ static float fwd(float hp, float a, float p, const float* w) {
    const float al = sigmoid(a + w[0]);
    return al * hp + (1.f - al) * tanhf(d_of(w) * hp + p + w[1]);
  }
  __device__ static float bwd(float G, float hp, float a, float p, const float* w, float& da, float& dp, float* dw) {
    const float al = sigmoid(a + w[0]), d = d_of(w), v = tanhf(d * hp + p + w[1]);
    da = G * (hp - v) * al * (1.f - al);
    dp = G * (1.f - al) * (1.f - v * v);
    dw[0] += da, dw[1] += dp;
    if constexpr (kLearnedD) dw[2] += dp * hp;
    return G * al + dp * d;
  }
};
using CellE64 = CellAdditiveH<false>;
using CellE65 = CellAdditiveH<true>;

struct CellE67 {
  static constexpr int P = 3;
  __device__ static float fwd(float hp, float a, float p, const float* w) {
    const float al = sigmoid(a + w[2] * hp + w[0]);
    return al * hp + (1.f - al) * tanhf(p + w[1]);
  }
  __device__ static float bwd(float G, float hp, float a, float p, const float* w, float& da, float& dp, float* dw) {
    const float al = sigmoid(a + w[2] * hp + w[0]), v = tanhf(p + w[1]);
    da = G * (hp - v) * al * (1.f - al);
    dp = G * (1.f - al) * (1.f - v * v);
    dw[0] += da, dw[1] += dp, dw[2] += da * hp;
    return G * al + da * w[2];
  }
};

struct CellE68 {
  static constexpr int P = 4;
  __device__ static float fwd(float hp, float a, float p, const float* w) {
    const float al = sigmoid(a + w[0]), g = sigmoid(w[2] * hp + w[3]);
    return al * hp + (1.f - al) * tanhf(p + w[1]) * g;
  }
  __device__ static float bwd(float G, float hp, float a, float p, const float* w, float& da, float& dp, float* dw) {
    const float al = sigmoid(a + w[0]), g = sigmoid(w[2] * hp + w[3]), c = tanhf(p + w[1]);
    da = G * (hp - c * g) * al * (1.f - al);
    const float dv = G * (1.f - al);
    dp = dv * g * (1.f - c * c);
    const float dgpre = dv * c * g * (1.f - g);
    dw[0] += da, dw[1] += dp, dw[2] += dgpre * hp, dw[3] += dgpre;
    return G * al + dgpre * w[2];
  }
};

// E74 diagonal (spec 2.19; a = k, p = v, no parameters): h = f(c hp + v k) with c = 1 - k^2 (delta) or 0.9
// (simple) and f = tanh or the identity.
template <bool kDelta, bool kTanh>
struct CellE74Diag {
  static constexpr int P = 0;
  __device__ static float fwd(float hp, float k, float v, const float*) {
    const float pre = (kDelta ? 1.f - k * k : 0.9f) * hp + v * k;
    return kTanh ? tanhf(pre) : pre;
  }
  __device__ static float bwd(float G, float hp, float k, float v, const float*, float& dk, float& dv, float*) {
    const float c = kDelta ? 1.f - k * k : 0.9f;
    float dpre = G;
    if constexpr (kTanh) {
      const float h = tanhf(c * hp + v * k);
      dpre = G * (1.f - h * h);
    }
    dk = dpre * (kDelta ? v - 2.f * k * hp : v);
    dv = dpre * k;
    return dpre * c;
  }
};

// Register arrays of a cell's P parameters (at least one element, so cells without parameters compile).
template <typename Cell>
using ParamRegs = float[Cell::P > 0 ? Cell::P : 1];

// Calls f(CellType{}) for the runtime cell id (ops::DiagCell order).
template <typename F>
void dispatch_diag_cell(int cell, F&& f) {
  switch (cell) {
    case 0: f(CellE61{}); break;
    case 1: f(CellE62{}); break;
    case 2: f(CellE64{}); break;
    case 3: f(CellE65{}); break;
    case 4: f(CellE67{}); break;
    case 5: f(CellE68{}); break;
    case 6: f(CellE74Diag<true, true>{}); break;
    case 7: f(CellE74Diag<false, true>{}); break;
    case 8: f(CellE74Diag<false, false>{}); break;
    default: TORCH_CHECK(false, "gated_diag: unknown cell id ", cell);
  }
}

}  // namespace elman::cuda
