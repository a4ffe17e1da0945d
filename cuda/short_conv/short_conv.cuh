// Depthwise causal short convolution: tiles, parameters and the pieces the forward and backward share.
//
// Shapes: B batch, T steps, C channels (rightmost fastest), W taps (<= 4).
// y (forward) and its gradient gy (backward) come as pieces along C (Pieces): the layers split y into q, k, v or x,
// B, C, and each piece is its own tensor, so the ops after the conv read it contiguous and their gradients reach the
// backward where they are, with no concatenation.
// Tiles: one block of kThreads per kTileC channels x tile_steps<T>() steps of one batch row (blockIdx = channel
// tile, step tile, batch row). A block first copies its tile of x (and, backward, of gy), with the W-1 steps of
// halo the conv needs, into shared memory, every thread issuing all of its vector loads (E elements: 16 bytes where
// every pointer, stride and piece allows, else 1) before any is used; then each thread walks a run of steps of one
// channel from shared memory, a warp storing 32 adjacent channels of a step at once.
#pragma once
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "cuda/common/sigmoid.cuh"
#include "cuda/common/vec.cuh"

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

// Host: whether the tiles' loads may take 16-byte vectors: every non-null pointer 16-byte aligned and every count
// (the channels, the pieces' sizes, the row strides, in elements of es bytes) a multiple of the vector.
inline bool vectors_fit(int64_t es, const std::vector<const void*>& ptrs, const std::vector<int64_t>& counts) {
  const int64_t E = 16 / es;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  for (int64_t s : counts)
    if (s % E != 0) return false;
  return true;
}

// Host: launches kernel<T, E, W> (E = 16 bytes of T when `wide`, else 1; W in 1..kMaxW) over the tiles of x
// [B,T,C] with params p, on the current stream. `kernel` is a callable template, called with E and W as
// std::integral_constant to name the instantiation.
template <typename T, typename K>
void launch_tiles(bool wide, int64_t W, int64_t B, int64_t steps, int64_t C, const Params<T>& p, K&& kernel) {
  const dim3 grid(blocks_for(C, kTileC), blocks_for(steps, tile_steps<T>()), static_cast<unsigned>(B));
  auto with_e = [&](auto e) {
    auto go = [&](auto w) {
      kernel(e, w)<<<grid, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    switch (W) {
      case 1: go(std::integral_constant<int, 1>{}); break;
      case 2: go(std::integral_constant<int, 2>{}); break;
      case 3: go(std::integral_constant<int, 3>{}); break;
      case 4: go(std::integral_constant<int, 4>{}); break;
      default: TORCH_CHECK(false, "short_conv: the CUDA kernel supports widths W <= ", kMaxW, ", got ", W);
    }
  };
  if (wide) with_e(std::integral_constant<int, static_cast<int>(16 / sizeof(T))>{});
  else with_e(std::integral_constant<int, 1>{});
}

}  // namespace elman::cuda::short_conv
