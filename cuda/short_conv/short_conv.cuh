// Depthwise causal short convolution: thread layout, parameters and the pieces the forward and backward share.
//
// Shapes: B batch, T steps, C channels (rightmost fastest), W taps (<= 4).
// y (forward) and its gradient gy (backward) come as pieces along C (Pieces): the layers split y into q, k, v or x,
// B, C, and each piece is its own tensor, so the ops after the conv read it contiguous and their gradients reach the
// backward where they are, with no concatenation.
// Thread layout: a block is kLanes x kRuns threads. Lane l (threadIdx.x) owns V adjacent channels
// c0 = (blockIdx.x kLanes + l) V .. c0 + V - 1, so a warp reads 32 V adjacent channels of one step (coalesced);
// threadIdx.y picks a run of kRun consecutive steps, t0 = (blockIdx.y kRuns + threadIdx.y) kRun; blockIdx.z is
// the batch row. A thread walks its run in order and keeps the last W inputs in registers, so each input is
// read once per run plus W-1 steps of halo before it.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "cuda/common/vec.cuh"
#include "cuda/common/sigmoid.cuh"

namespace elman::cuda::short_conv {

constexpr int kLanes = 32;  // threads along channels: one warp
constexpr int kRuns = 8;    // runs of steps per block
constexpr int kRun = 16;    // consecutive steps per thread
constexpr int kThreads = kLanes * kRuns;
constexpr int kMaxW = 4;
constexpr int kMaxPieces = 4;

// A [B,T,C] tensor split along C into n pieces: piece i holds channels end[i-1] .. end[i]-1 (end[-1] = 0), channel c
// of step (b,t) at p[i] + b sb[i] + t st[i] + c - end[i-1]. A null p[i] (backward: a piece without a gradient) reads
// as zeros.
template <typename P>
struct Pieces {
  P* p[kMaxPieces];
  int64_t sb[kMaxPieces], st[kMaxPieces];
  int end[kMaxPieces];
  int n;
};

// The piece holding channel c: its element (b, 0, c) and its step stride.
template <typename P>
struct PieceRow {
  P* at;  // null: no tensor (zeros)
  int64_t st;
};
template <typename P>
__device__ __forceinline__ PieceRow<P> piece_row(const Pieces<P>& ps, int b, int c) {
  P* at = ps.p[0];
  int64_t sb = ps.sb[0], st = ps.st[0];
  int begin = 0;
#pragma unroll
  for (int k = 1; k < kMaxPieces; ++k)  // static indices: the pieces stay in the parameter space
    if (k < ps.n && c >= ps.end[k - 1]) at = ps.p[k], sb = ps.sb[k], st = ps.st[k], begin = ps.end[k - 1];
  if (at == nullptr) return {nullptr, 0};
  return {at + b * sb + (c - begin), st};
}

template <typename scalar_t>
struct Params {
  const scalar_t* x;    // [B,T,C]: element (b,t,c) at b x_sb + t x_st + c
  int64_t x_sb, x_st;
  const float* w;       // [C,W]
  const float* bias;    // [C], or null for no bias
  Pieces<scalar_t> y;         // forward: the output's pieces
  Pieces<const scalar_t> gy;  // backward: the pieces of y's gradient (null: zero)
  scalar_t* dx;         // backward: [B,T,C], element (b,t,c) at b dx_sb + t dx_st + c
  int64_t dx_sb, dx_st;
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

// Host: sizes are a split of C into at most kMaxPieces positive parts.
inline void check_sizes(const std::vector<int64_t>& sizes, int64_t C) {
  int64_t sum = 0;
  for (int64_t n : sizes) {
    TORCH_CHECK(n > 0, "short_conv: the pieces' sizes must be positive");
    sum += n;
  }
  TORCH_CHECK(!sizes.empty() && sizes.size() <= static_cast<size_t>(kMaxPieces) && sum == C,
              "short_conv: the kernel splits C = ", C, " into 1 to ", kMaxPieces, " pieces, got sizes ", sizes);
}

// Host: the pieces (ts[i] [B,T,sizes[i]] with channels adjacent, or undefined: zeros) as the kernels take them.
template <typename P>
Pieces<P> pieces_of(const std::vector<at::Tensor>& ts, const std::vector<int64_t>& sizes) {
  Pieces<P> ps{};
  ps.n = static_cast<int>(sizes.size());
  int64_t end = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const bool has = ts[i].defined();
    ps.p[i] = has ? static_cast<P*>(ts[i].data_ptr()) : nullptr;
    ps.sb[i] = has ? ts[i].stride(0) : 0, ps.st[i] = has ? ts[i].stride(1) : 0;
    ps.end[i] = static_cast<int>(end += sizes[i]);
  }
  return ps;
}

// Host: the widest vector of V in {4, 2, 1} elements of es bytes such that every non-null pointer is V-element
// aligned and every count (the channels, the pieces' sizes, the row strides, in elements) is a multiple of V.
inline int vec_width(int64_t es, const std::vector<const void*>& ptrs, const std::vector<int64_t>& counts) {
  for (int V : {4, 2}) {
    bool ok = true;
    for (const void* p : ptrs) ok = ok && reinterpret_cast<uintptr_t>(p) % (V * es) == 0;
    for (int64_t s : counts) ok = ok && s % V == 0;
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
