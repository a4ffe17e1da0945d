// Device pieces shared by the matrix-state Elman forward and backward kernels (E70-E73): the cell traits, the
// thread layout, the per-segment staging of the inputs in shared memory and one forward step of a state row.
//
// Every cell (ops/matrix_elman/reference.h) is row-separable: row i of S_t needs only row i of S_{t-1}, the
// row's own scalars (v_i, a_i, the per-row parameters) and the step's shared vectors k, q (and E73's z). So a
// row is walked over all T by one warp with no communication with other rows; only the staging of the shared
// vectors and, in the backward, the column sums dk, dq (, dz) couple warps.
//
// Layout: a block holds kRows = 8 consecutive rows of one batch element (one warp each); grid = B * ceil(n / 8)
// blocks (768 at the 100M shape, batch 32 x n_state 96). Lane l of a warp owns the J columns l, l + 32, ..
// (NP = 32 J padded columns, J = ceil(n / 32) in 1..4), so shared-memory reads of k[j], q[j] are conflict-free and
// the row dots are J FMAs + 5 xor shuffles. The padding is exact: padded k, q, z are zero, so padded columns of
// the state and of its gradient stay zero; rows past n (the last block's spare warps) read zero v and stay zero.
// Inputs are staged per segment of K steps (K = 16 for NP <= 64, 8 above; also the checkpoint interval):
// k, q (, z = tanh(z~ + b_z)) as fp32 [K][NP], and the block's rows' v (, a) as fp32 [K][kRows], loaded into
// registers one segment ahead (Prefetch) so the global latency hides behind the previous segment's steps.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common/reduce.cuh"
#include "cuda/common/sigmoid.cuh"

namespace elman::cuda::matrix {

enum Cell : int { kE70 = 0, kE71 = 1, kE72 = 2, kE73 = 3 };  // the order of ops::MatrixCell

template <int C>
struct CellTraits {
  static constexpr int P = C == kE70 ? 3 : 4;                           // projections in proj
  static constexpr int Pw = C == kE71 ? 2 : C == kE72 ? 3 : 1;          // per-row parameters in w
  static constexpr bool kGate = C == kE71 || C == kE72;                 // reads r = S_{t-1} k and the row's a
  static constexpr bool kZ = C == kE73;                                 // the per-column z from the 4th projection
  static constexpr int kCols = kZ ? 3 : 2;                              // column-summed gradients dk, dq (, dz~)
};

constexpr int kRows = 8;  // warps per block = state rows per block
constexpr int kThreads = 32 * kRows;

template <int J_>
struct Layout {
  static constexpr int J = J_;                // columns per lane
  static constexpr int NP = 32 * J;           // padded state width
  static constexpr int K = J <= 2 ? 16 : 8;  // steps per segment = checkpoint interval (backward shared memory)
  static_assert(K <= 32 && K * kRows <= kThreads, "a lane keeps one step's row scalars; one thread stages one");
};

// Calls f(Layout<J>{}) for the smallest J with 32 J >= n (1 <= n <= 128).
template <typename F>
void dispatch_layout(int64_t n, F&& f) {
  TORCH_CHECK(n >= 1 && n <= 128, "matrix_elman: n_state ", n,
              " is not supported; use an n_state from 1 to 128 (--nstate)");
  if (n <= 32) f(Layout<1>{});
  else if (n <= 64) f(Layout<2>{});
  else if (n <= 96) f(Layout<3>{});
  else f(Layout<4>{});
}

// Calls f(std::integral_constant<int, cell>{}).
template <typename F>
void dispatch_cell(int cell, F&& f) {
  switch (cell) {
    case kE70: f(std::integral_constant<int, kE70>{}); break;
    case kE71: f(std::integral_constant<int, kE71>{}); break;
    case kE72: f(std::integral_constant<int, kE72>{}); break;
    case kE73: f(std::integral_constant<int, kE73>{}); break;
    default: TORCH_CHECK(false, "matrix_elman: unknown cell ", cell);
  }
}

// The padded width NP, the segment length K and the number of segments for n_state n and T steps.
inline void segment_geometry(int64_t n, int64_t T, int64_t& NP, int64_t& K, int64_t& nseg) {
  dispatch_layout(n, [&](auto layout) {
    using L = decltype(layout);
    NP = L::NP, K = L::K;
  });
  nseg = (T + K - 1) / K;
}

// Everything either kernel reads or writes (unused pointers are null).
template <typename scalar_t>
struct Params {
  const scalar_t* proj;  // [B,T,P*n] = [k | v | q (| a or z~)]
  const float* w;        // [Pw,n]
  const float* S0;       // forward: [B,n,n]
  float* ckpt;           // [B,n,nseg,NP]: written by the forward, read by the backward
  scalar_t* y;           // forward: [B,T,n]
  float* S_T;            // forward: [B,n,n]
  const scalar_t* dy;    // backward: [B,T,n], or null (zero)
  const float* dS_T;     // backward: [B,n,n], or null (zero)
  scalar_t* dproj;       // backward: [B,T,P*n]; the kernel writes the row slots dv (, da)
  float* gcol;           // backward: [B,T,kCols,n4], zeroed; every block adds its rows' dk, dq (, dz~)
  float* wpart;          // backward: [B,Pw,n] sums over T of the per-row parameters' gradients (not E73)
  float* dS0;            // backward: [B,n,n]
  int B, T, n, n4, nblk, nseg;
};

// Precise sigmoid (cuda/common/sigmoid.cuh) and tanhf, no fast-math: fp32 results agree with the LibTorch reference
// to ~1e-6.

// Two warp sums with their shuffles interleaved (independent chains).
__device__ __forceinline__ void warp_sum2(float& a, float& b) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float ta = __shfl_xor_sync(0xffffffffu, a, off), tb = __shfl_xor_sync(0xffffffffu, b, off);
    a += ta, b += tb;
  }
}

// The per-row parameters a warp keeps in registers (each cell reads its own; zero for rows past n).
struct RowParams {
  float lam = 0.f, b_alpha = 0.f, d_alpha = 0.f, d_g = 0.f, b_g = 0.f;
};

template <int C>
__device__ __forceinline__ RowParams load_row_params(const float* w, int n, int row) {
  RowParams rp;
  if (row >= n) return rp;
  if constexpr (C == kE70) rp.lam = fminf(fmaxf(w[row], 0.f), 0.999f);
  if constexpr (C == kE71) rp.b_alpha = w[row], rp.d_alpha = w[n + row];
  if constexpr (C == kE72) rp.b_alpha = w[row], rp.d_g = w[n + row], rp.b_g = w[2 * n + row];
  return rp;
}

// Shared-memory inputs of one segment of K steps.
template <class L, int C>
struct Stage {
  float k[L::K][L::NP];
  float q[L::K][L::NP];
  float z[CellTraits<C>::kZ ? L::K : 1][L::NP];  // E73: z = tanh(z~ + b_z)
  float v[L::K][kRows];                          // the block's rows
  float a[L::K][kRows];                          // E71: a; E72: alpha = sigmoid(a + b_alpha)
};

// The inputs of one segment, loaded from global memory into registers one segment ahead and written to shared
// memory when that segment starts. Raw values are kept until store(): converting them at load time would wait
// for the loads.
template <class L, int C, typename scalar_t>
struct Prefetch {
  using CT = CellTraits<C>;
  static constexpr int M = (L::K * L::NP + kThreads - 1) / kThreads;  // column elements per thread
  scalar_t k[M], q[M], z[CT::kZ ? M : 1], v, a;

  // Steps [t0, t0 + len) of batch b for the rows from i0; zeros beyond n and len.
  __device__ __forceinline__ void load(const Params<scalar_t>& p, int b, int i0, int t0, int len) {
    const int n = p.n;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int idx = threadIdx.x + m * kThreads, s = idx / L::NP, j = idx - s * L::NP;
      k[m] = q[m] = scalar_t(0.f);
      if constexpr (CT::kZ) z[m] = scalar_t(0.f);
      if (idx < L::K * L::NP && s < len && j < n) {
        const scalar_t* src = p.proj + (static_cast<int64_t>(b) * p.T + t0 + s) * CT::P * n;
        k[m] = src[j], q[m] = src[2 * n + j];
        if constexpr (CT::kZ) z[m] = src[3 * n + j];
      }
    }
    const int s = threadIdx.x / kRows, row = i0 + threadIdx.x % kRows;
    v = a = scalar_t(0.f);
    if (threadIdx.x < L::K * kRows && s < len && row < n) {
      const scalar_t* src = p.proj + (static_cast<int64_t>(b) * p.T + t0 + s) * CT::P * n;
      v = src[n + row];
      if constexpr (CT::kGate) a = src[3 * n + row];
    }
  }

  // Writes the staged inputs into st (z through tanh, E72's alpha through the sigmoid). The caller synchronises.
  __device__ __forceinline__ void store(const Params<scalar_t>& p, int i0, Stage<L, C>& st) const {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int idx = threadIdx.x + m * kThreads, s = idx / L::NP, j = idx - s * L::NP;
      if (idx < L::K * L::NP) {
        st.k[s][j] = static_cast<float>(k[m]), st.q[s][j] = static_cast<float>(q[m]);
        if constexpr (CT::kZ) st.z[s][j] = j < p.n ? tanhf(static_cast<float>(z[m]) + p.w[j]) : 0.f;
      }
    }
    if (threadIdx.x < L::K * kRows) {
      const int s = threadIdx.x / kRows, r = threadIdx.x % kRows, row = i0 + r;
      st.v[s][r] = static_cast<float>(v);
      if constexpr (C == kE71) st.a[s][r] = static_cast<float>(a);
      if constexpr (C == kE72) st.a[s][r] = row < p.n ? sigmoid(static_cast<float>(a) + p.w[row]) : 0.f;
    }
  }
};

// A row's scalars of one step: what the backward needs besides the state (r, alpha, g: E71/E72 only).
struct RowStep {
  float r, al, g, u;
};

// One forward step of a warp's state row S (lane's J columns) at staged step s, row w of the block; returns the
// row's step scalars with u = S_t q (every lane has them).
template <class L, int C>
__device__ __forceinline__ RowStep step_forward(float (&S)[L::J], const Stage<L, C>& st, int s, int w, int lane,
                                                const RowParams& rp) {
  constexpr int J = L::J;
  float k[J], q[J];
#pragma unroll
  for (int e = 0; e < J; ++e) k[e] = st.k[s][lane + 32 * e], q[e] = st.q[s][lane + 32 * e];
  const float v = st.v[s][w];
  RowStep o{0.f, 0.f, 0.f, 0.f};
  if constexpr (C == kE70) {
#pragma unroll
    for (int e = 0; e < J; ++e) S[e] = fmaf(rp.lam, S[e], v * k[e]);
  } else if constexpr (C == kE73) {
#pragma unroll
    for (int e = 0; e < J; ++e) S[e] = tanhf(fmaf(S[e], st.z[s][lane + 32 * e], v * k[e]));
  } else {
    float r = 0.f;
#pragma unroll
    for (int e = 0; e < J; ++e) r = fmaf(S[e], k[e], r);
    r = warp_sum(r);
    float c;  // the coefficient of k in the row's update
    if constexpr (C == kE71) {
      o.al = sigmoid(st.a[s][w] + fmaf(rp.d_alpha, r, rp.b_alpha));
      c = (1.f - o.al) * v;
    } else {
      o.al = st.a[s][w];
      o.g = sigmoid(fmaf(rp.d_g, r, rp.b_g));
      c = (1.f - o.al) * v * o.g;
    }
    o.r = r;
#pragma unroll
    for (int e = 0; e < J; ++e) S[e] = fmaf(o.al, S[e], c * k[e]);
  }
  float u = 0.f;
#pragma unroll
  for (int e = 0; e < J; ++e) u = fmaf(S[e], q[e], u);
  o.u = warp_sum(u);
  return o;
}

}  // namespace elman::cuda::matrix
