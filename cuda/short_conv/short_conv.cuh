// Depthwise causal short convolution: tiles, parameters and the pieces the forward and backward share.
//
// Shapes: B batch, T steps, C channels (rightmost fastest), W taps (<= 4).
// y (forward) and its gradient gy (backward) come as pieces along C (Pieces): the layers split y into q, k, v or x,
// B, C, and each piece is its own tensor, so the ops after the conv read it contiguous and their gradients reach the
// backward where they are, with no concatenation.
// Tiles: one block of kThreads per kTileC channels x tile_steps<T>() steps of one batch row (blockIdx = channel
// tile, step tile, batch row). A block first copies its tile of x (and, backward, of gy), with the W-1 steps of
// halo the conv needs, into shared memory, every thread issuing all of its vector loads (E elements: 16 bytes where
// every pointer, stride and piece allows, else 1) before any is used; then it computes from shared memory and
// writes its outputs in E-element vectors.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "cuda/common/vec.cuh"
#include "cuda/common/sigmoid.cuh"

namespace elman::cuda::short_conv {

constexpr int kThreads = 256;
constexpr int kTileC = 64;  // channels per block
constexpr int kMaxW = 4;
template <typename T>
constexpr int tile_steps() { return sizeof(T) == 2 ? 64 : 32; }  // steps per block: the backward's ~40 KB of tiles
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

// E zeros, or the E elements at src.
template <typename T, int E>
__device__ __forceinline__ Vec<T, E> load_or_zero(const T* src, bool ok) {
  if (ok) return *reinterpret_cast<const Vec<T, E>*>(src);
  Vec<T, E> v;
#pragma unroll
  for (int e = 0; e < E; ++e) v.v[e] = static_cast<T>(0.f);
  return v;
}

// Copies x at steps t0 - (W-1) .. t0 - (W-1) + R - 1 of the block's channels c_tile .. c_tile + kTileC - 1 (batch
// row b) into xs [R][kTileC], zeros outside [0, T) and past C; and the taps and bias (0 past C, or without a bias)
// into ws [W][kTileC] and bs [kTileC]. The caller syncs.
template <typename T, int E, int W, int R>
__device__ __forceinline__ void load_x_tile(const Params<T>& p, int b, int c_tile, int t0, T (*xs)[kTileC],
                                            float (*ws)[kTileC], float* bs) {
  constexpr int CH = kTileC / E;
  static_assert(kThreads % CH == 0, "a thread's vector column must stay fixed over the rows");
  const int k = threadIdx.x % CH, c = c_tile + k * E;
  const bool in_c = c < p.C;
  const T* xcol = p.x + b * p.x_sb + c;
  for (int r = threadIdx.x / CH; r < R; r += kThreads / CH) {
    const int t = t0 - (W - 1) + r;
    *reinterpret_cast<Vec<T, E>*>(&xs[r][k * E]) = load_or_zero<T, E>(xcol + t * p.x_st, in_c && t >= 0 && t < p.T);
  }
  if (threadIdx.x < kTileC) {
    const int cc = c_tile + threadIdx.x;
#pragma unroll
    for (int i = 0; i < W; ++i) ws[i][threadIdx.x] = cc < p.C ? p.w[cc * W + i] : 0.f;
    bs[threadIdx.x] = cc < p.C && p.bias != nullptr ? p.bias[cc] : 0.f;
  }
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

// Host: the widest vector of V in {max_v, max_v / 2, ..., 1} elements (max_v a power of 2) of es bytes such that
// every non-null pointer is V-element aligned and every count (the channels, the pieces' sizes, the row strides, in
// elements) is a multiple of V.
inline int vec_width(int64_t es, const std::vector<const void*>& ptrs, const std::vector<int64_t>& counts,
                     int64_t max_v) {
  for (int64_t V = max_v; V > 1; V /= 2) {
    bool ok = true;
    for (const void* p : ptrs) ok = ok && reinterpret_cast<uintptr_t>(p) % (V * es) == 0;
    for (int64_t s : counts) ok = ok && s % V == 0;
    if (ok) return static_cast<int>(V);
  }
  return 1;
}

// Host: calls f(V, W) with both as std::integral_constant (V in {8, 4, 2, 1}, W in 1..kMaxW); the callers
// instantiate their kernels only for the V they launch.
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
  if (V == 8) with_w(std::integral_constant<int, 8>{});
  else if (V == 4) with_w(std::integral_constant<int, 4>{});
  else if (V == 2) with_w(std::integral_constant<int, 2>{});
  else with_w(std::integral_constant<int, 1>{});
}

}  // namespace elman::cuda::short_conv
