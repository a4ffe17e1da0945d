// Gated RMSNorm: parameters, row indexing and the host helpers the forward and backward share.
//
// Shapes: rows = numel / C rows of C values (rightmost fastest); one warp per row, rows strided over the grid; a
// lane owns the columns lane V + k 32 V (V values per access), the same for every row it visits.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "cuda/common/dispatch.h"
#include "cuda/common/reduce.cuh"
#include "cuda/common/vec.cuh"
#include "cuda/common/sigmoid.cuh"

namespace elman::cuda::gated_norm {

constexpr int kMaxWarps = 8;
constexpr int kMaxC = 12288;  // the backward's per-warp dw rows fill at most 48 KB of shared memory
// Long rows (Mamba2's d_inner 1792) run one block per row instead: kRowE consecutive values per thread, C / kRowE
// threads (rounded up to whole warps), for kRowMinC <= C <= kRowMaxC with C % kRowE == 0 (the row kernels).
constexpr int kRowE = 8;
constexpr int kRowMinC = 1024;
constexpr int kRowMaxC = 1024 * kRowE;

// Where a row of a strided [..., C] tensor starts: its leading dims collapsed to (at most) an outer and an inner
// level, offset(row) = (row / inner) s_outer + (row % inner) s_inner (elements). GatedDeltaNet's gate, a narrow
// of its projection viewed as [B,T,H,dv], is outer = B T steps of the projection's row stride, inner = H heads of dv.
struct Rows {
  int64_t inner = 1, s_outer = 0, s_inner = 0;
  __host__ __device__ int64_t offset(int64_t row) const { return (row / inner) * s_outer + (row % inner) * s_inner; }
};

template <typename Y, typename Z, typename O>
struct Params {
  const Y* y;  // rows of C at y + ry.offset(row)
  Rows ry;
  const Z* z;  // rows of C at z + rz.offset(row)
  Rows rz;
  const float* w;  // [C]
  float* rstd;     // [rows]: written by the forward, read by the backward
  O* n;            // forward: [rows, C] contiguous
  const O* gn;     // backward: [rows, C] contiguous
  Y* dy;           // backward: [rows, C] contiguous
  Z* dz;           // backward: rows of C at dz + rdz.offset(row)
  Rows rdz;
  float* part;     // backward: [gridDim.x, C] per-block sums of dw
  int64_t rows;
  int C;
  float eps;
  bool gate_first;  // GateThenNorm: rmsnorm(y silu(z)) w; else rmsnorm(y) w silu(z)
};

// Host: sets r to t's rows and returns true, or returns false when t's last dim is not contiguous or its leading
// dims do not collapse to two levels.
inline bool row_layout(const at::Tensor& t, Rows& r) {
  const int64_t d = t.dim();
  if (t.size(-1) > 1 && t.stride(-1) != 1) return false;
  int64_t sizes[2], strides[2];
  int levels = 0;
  for (int64_t i = d - 2; i >= 0; --i) {  // innermost first
    if (t.size(i) == 1) continue;
    if (levels > 0 && t.stride(i) == strides[levels - 1] * sizes[levels - 1]) {
      sizes[levels - 1] *= t.size(i);  // merges with the level inside it
      continue;
    }
    if (levels == 2) return false;
    sizes[levels] = t.size(i), strides[levels] = t.stride(i), ++levels;
  }
  r = Rows{};
  if (levels == 1) r.s_outer = strides[0];
  if (levels == 2) r.inner = sizes[0], r.s_inner = strides[0], r.s_outer = strides[1];
  return true;
}

// Host: t itself with its rows in r, or (when row_layout rejects t's layout) a contiguous copy of it.
inline at::Tensor with_rows(const at::Tensor& t, Rows& r) {
  if (row_layout(t, r)) return t;
  auto c = t.contiguous();
  row_layout(c, r);
  return c;
}

// Host: whether rows of C values at ptr + offset(row) allow V-element accesses.
inline bool rows_fit(const void* ptr, int64_t es, const Rows& r, int64_t C, int V) {
  return C % V == 0 && reinterpret_cast<uintptr_t>(ptr) % (V * es) == 0 && r.s_outer % V == 0 && r.s_inner % V == 0;
}

// Host: whether the row kernels take rows of C values at ptr + r.offset(row) (element size es): C in their range,
// rows and ptr aligned for kRowE-value accesses.
inline bool row_kernel_fits(const void* ptr, int64_t es, const Rows& r, int64_t C) {
  return C >= kRowMinC && C <= kRowMaxC && rows_fit(ptr, es, r, C, kRowE);
}

// Host: whether each of the row kernels' contiguous operands (n, gn, dy, w) starts aligned for kRowE-value
// accesses in its own dtype.
inline bool row_operands_fit(std::initializer_list<const at::Tensor*> ts) {
  for (const at::Tensor* t : ts)
    if (reinterpret_cast<uintptr_t>(t->data_ptr()) % (kRowE * t->element_size()) != 0) return false;
  return true;
}

// Host: threads per block of a row kernel: C / kRowE rounded up to whole warps.
inline int row_threads(int64_t C) { return static_cast<int>((C / kRowE + 31) / 32 * 32); }

// Host: the grid of a row kernel (one block per row at a time, rows strided over the grid): every row once, at
// most as many blocks as fill the SMs' 2048 threads each.
inline int row_grid(int64_t rows, int64_t C, int sms) {
  const int64_t per_sm = 2048 / row_threads(C);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(rows, per_sm * sms)));
}

// Host: calls f(Y{}, Z{}, O{}) with the C++ element types of y, z and out (float or c10::BFloat16).
template <typename F>
void dispatch_types(at::ScalarType y, at::ScalarType z, at::ScalarType out, F&& f) {
  with_type(y, [&](auto yt) {
    with_type(z, [&](auto zt) { with_type(out, [&](auto ot) { f(yt, zt, ot); }); });
  });
}

// Host: the grid of a row kernel with `warps` warps per block: every row once, at most 4 blocks per SM.
inline int grid_for(int64_t rows, int warps, int sms) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((rows + warps - 1) / warps, 4 * sms)));
}

}  // namespace elman::cuda::gated_norm
