// Depthwise causal short convolution: thread layout, parameters and the pieces the forward and backward share.
//
// Shapes: B batch, T steps, C channels (rightmost fastest), W taps (<= 4).
// Thread layout: a block is kLanes x kRuns threads. Lane l (threadIdx.x) owns V adjacent channels
// c0 = (blockIdx.x kLanes + l) V .. c0 + V - 1, so a warp reads 32 V adjacent channels of one step (coalesced);
// threadIdx.y picks a run of kRun consecutive steps, t0 = (blockIdx.y kRuns + threadIdx.y) kRun; blockIdx.z is
// the batch row. A thread walks its run in order and keeps the last W inputs in registers, so each input is
// read once per run plus W-1 steps of halo before it.
#pragma once
#include <c10/util/Exception.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "cuda/common/vec.cuh"
#include "cuda/common/sigmoid.cuh"

namespace elman::cuda::short_conv {

constexpr int kLanes = 32;  // threads along channels: one warp
constexpr int kRuns = 8;    // runs of steps per block
constexpr int kRun = 16;    // consecutive steps per thread
constexpr int kThreads = kLanes * kRuns;
constexpr int kMaxW = 4;

template <typename scalar_t>
struct Params {
  const scalar_t* x;    // [B,T,C]: element (b,t,c) at b x_sb + t x_st + c
  int64_t x_sb, x_st;
  const float* w;       // [C,W]
  const float* bias;    // [C], or null for no bias
  scalar_t* y;          // forward: [B,T,C] contiguous
  const scalar_t* gy;   // backward: [B,T,C] contiguous
  scalar_t* dx;         // backward: [B,T,C] contiguous
  float* part;          // backward: [B gridDim.y, W+1, C] per-block sums: dw rows 0..W-1, dbias row W
  int B, T, C;
  bool silu;
};

// The taps and bias of channels c0 .. c0+V-1: w[i][j] = w[c0+j, i].
template <int V, int W, typename scalar_t>
__device__ __forceinline__ void load_taps(const Params<scalar_t>& p, int c0, float (&w)[W][V], float (&bias)[V]) {
#pragma unroll
  for (int j = 0; j < V; ++j) {
#pragma unroll
    for (int i = 0; i < W; ++i) w[i][j] = p.w[(c0 + j) * W + i];
    bias[j] = p.bias != nullptr ? p.bias[c0 + j] : 0.f;
  }
}

// The conv of the window win (x at t-W+1 .. t, newest last) for V channels.
template <int V, int W>
__device__ __forceinline__ void conv(const float (&w)[W][V], const float (&bias)[V], const float (&win)[W][V],
                                     float (&a)[V]) {
#pragma unroll
  for (int j = 0; j < V; ++j) {
    a[j] = bias[j];
#pragma unroll
    for (int i = 0; i < W; ++i) a[j] = fmaf(w[i][j], win[i][j], a[j]);
  }
}

// Drops the oldest of W vectors (index 0) to make room for a new one at W-1.
template <int V, int W>
__device__ __forceinline__ void shift(float (&r)[W][V]) {
#pragma unroll
  for (int i = 0; i + 1 < W; ++i)
#pragma unroll
    for (int j = 0; j < V; ++j) r[i][j] = r[i + 1][j];
}

// Host: the widest vector of V in {4, 2, 1} elements of es bytes such that V divides C, every pointer is
// V-element aligned and every row stride (in elements) is a multiple of V.
inline int vec_width(int64_t C, int64_t es, std::initializer_list<const void*> ptrs,
                     std::initializer_list<int64_t> strides) {
  for (int V : {4, 2}) {
    bool ok = C % V == 0;
    for (const void* p : ptrs) ok = ok && reinterpret_cast<uintptr_t>(p) % (V * es) == 0;
    for (int64_t s : strides) ok = ok && s % V == 0;
    if (ok) return V;
  }
  return 1;
}

// Host: calls f(V, W) with both as std::integral_constant (V in {4, 2, 1}, W in 1..kMaxW).
template <typename F>
void dispatch(int V, int64_t W, F&& f) {
  auto with_w = [&](auto v) {
    switch (W) {
      case 1: f(v, std::integral_constant<int, 1>{}); break;
      case 2: f(v, std::integral_constant<int, 2>{}); break;
      case 3: f(v, std::integral_constant<int, 3>{}); break;
      case 4: f(v, std::integral_constant<int, 4>{}); break;
      default: TORCH_CHECK(false, "short_conv: the CUDA kernel supports widths W <= ", kMaxW, ", got ", W);
    }
  };
  if (V == 4) with_w(std::integral_constant<int, 4>{});
  else if (V == 2) with_w(std::integral_constant<int, 2>{});
  else with_w(std::integral_constant<int, 1>{});
}

}  // namespace elman::cuda::short_conv
