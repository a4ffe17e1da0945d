// Device pieces shared by the delta-rule matrix-state forward and backward kernels: the thread layout, the
// per-segment staging of the inputs in shared memory, and the row / column reductions.
//
// The recurrence (ops/delta_matrix/reference.h) is row-separable: row i of S_t depends only on row i of
// S_{t-1}, on v_i, beta_i and on the whole vectors khat and q. So one warp can own a few full rows and walk
// all T steps with no block-wide synchronisation; only the column sums of the backward (dkhat, dq) and the
// staging of inputs couple the warps, and those are done once per segment of K steps.
//
// Layout (one block per (batch, head); the n x n state zero-padded to NP x NP, NP in {8, 16, 32, 48, 64}):
//   * a thread owns J consecutive columns [c0, c0 + J) of one row; TPR = NP / J lanes cover a row, so a warp
//     holds RW = 32 / TPR rows and the block has NW = NP / RW warps (NP 8: 1 warp, 16: 4, 32: 8, 48: 12,
//     64: 16 warps). The state lives in J fp32 registers per thread for the whole launch.
//   * row sums (r = S khat, u = S q, and in the backward dd and dbeta) are J FMAs and log2(TPR) xor shuffles
//     inside the lane group; column sums (backward dkhat, dq) are a reduce-scatter over the warp's rows
//     (column_sum), stored as per-warp partials in shared memory and added up once per segment.
//   * the padding is exact: padded k, v, q are zero, so padded rows and columns of S stay zero (and so do
//     their gradients) and any n from 1 to 64 runs on the next larger NP.
// Inputs are staged per segment of K steps (K = 16 for NP <= 32, 8 for 48, 6 for 64; also the checkpoint
// interval): k, v, q and beta = sigmoid(b~ + b_beta) (1 when ungated) as fp32 in shared memory, then one warp
// per step replaces k by khat = k / (||k|| + 1e-6). The global loads for a segment are issued into registers
// while the previous segment runs (Prefetch), so only the shared-memory stores and two __syncthreads remain.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/reduce.cuh"
#include "cuda/common/sigmoid.cuh"

namespace elman::cuda::delta {

template <int NP_, int J_, int K_>
struct Layout {
  static constexpr int NP = NP_;           // padded state size
  static constexpr int J = J_;             // columns per thread
  static constexpr int K = K_;             // steps per segment = checkpoint interval
  static constexpr int TPR = NP / J;       // lanes per row
  static constexpr int RW = 32 / TPR;      // rows per warp
  static constexpr int NW = NP / RW;       // warps per block
  static constexpr int kThreads = NW * 32;
  static_assert(NP % J == 0 && 32 % TPR == 0 && NP % RW == 0 && NP <= 64, "bad delta_matrix layout");
};
using Layout8 = Layout<8, 2, 16>;
using Layout16 = Layout<16, 2, 16>;
using Layout32 = Layout<32, 4, 16>;
using Layout48 = Layout<48, 6, 8>;
using Layout64 = Layout<64, 8, 6>;

// Calls f(LayoutX{}) for the smallest layout that holds an n x n state (1 <= n <= 64).
template <typename F>
void dispatch_layout(int64_t n, F&& f) {
  TORCH_CHECK(n >= 1 && n <= 64, "delta_matrix: n_state ", n, " is not supported; use an n_state from 1 to 64");
  if (n <= 8) f(Layout8{});
  else if (n <= 16) f(Layout16{});
  else if (n <= 32) f(Layout32{});
  else if (n <= 48) f(Layout48{});
  else f(Layout64{});
}

// The padded state size NP, the segment length K and the number of segments for n_state n and T steps.
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
  const scalar_t* proj;  // [B,T,H*P*n], per head [k | v | q (| b~)]
  const float* b_beta;   // [H,n], or null when ungated
  const float* S0;       // forward: [B,H,n,n]
  float* ckpt;           // [B*H, nseg, NP, NP]: written by the forward, read by the backward
  scalar_t* y;           // forward: [B,T,H*n]
  float* S_T;            // forward: [B,H,n,n]
  const scalar_t* dy;    // backward: [B,T,H*n], or null (zero)
  const float* dS_T;     // backward: [B,H,n,n], or null (zero)
  scalar_t* dproj;       // backward: [B,T,H*P*n]
  float* db_part;        // backward: [B,H,n] per-batch sums of d b~ (gated)
  float* dS0;            // backward: [B,H,n,n]
  int B, T, H, n, nseg;
  bool gated;
};

// Precise sigmoid (cuda/common/sigmoid.cuh) and tanhf, no fast-math: fp32 results agree with the LibTorch reference
// to ~1e-6.

// Column sums over the RW rows of a warp (the lanes that share lane % TPR), reduce-scattered: at each row bit
// (xor offsets TPR, 2 TPR, .. 16) while the count of values is even, the lane with the bit set keeps the upper
// half of its window and sends the lower half (and its partner the reverse), so the count halves per level;
// once it is odd the remaining levels add whole windows. On return a[0 .. column_sum_count<TPR, J>()) hold the
// sums for columns c0 + base + i of the thread's columns; lanes that differ only in the whole-window levels
// hold identical copies. Shuffles per array: J - count at NP 32 (3 instead of 2 J).
template <int TPR, int J>
__host__ __device__ constexpr int column_sum_count() {
  int cnt = J;
  for (int off = TPR; off < 32; off <<= 1)
    if (cnt % 2 == 0) cnt /= 2;
  return cnt;
}

template <int OFF, int CNT, int J>
__device__ __forceinline__ void column_sum(float (&a)[J], int lane, int& base) {
  if constexpr (OFF < 32) {
    if constexpr (CNT % 2 == 0) {
      constexpr int half = CNT / 2;
      const bool upper = lane & OFF;
#pragma unroll
      for (int i = 0; i < half; ++i) {
        const float send = upper ? a[i] : a[i + half];
        const float keep = upper ? a[i + half] : a[i];
        a[i] = keep + __shfl_xor_sync(0xffffffffu, send, OFF);
      }
      if (upper) base += half;
      column_sum<OFF * 2, half, J>(a, lane, base);
    } else {
#pragma unroll
      for (int i = 0; i < CNT; ++i) a[i] += __shfl_xor_sync(0xffffffffu, a[i], OFF);
      column_sum<OFF * 2, CNT, J>(a, lane, base);
    }
  }
}

// J consecutive floats from shared memory (16- or 8-byte aligned: NP is a multiple of 8, c0 of J).
template <int J>
__device__ __forceinline__ void load_cols(const float* src, float (&dst)[J]) {
  if constexpr (J % 4 == 0) {
#pragma unroll
    for (int i = 0; i < J; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(src + i);
      dst[i] = v.x, dst[i + 1] = v.y, dst[i + 2] = v.z, dst[i + 3] = v.w;
    }
  } else {
    static_assert(J % 2 == 0, "J must be even");
#pragma unroll
    for (int i = 0; i < J; i += 2) {
      const float2 v = *reinterpret_cast<const float2*>(src + i);
      dst[i] = v.x, dst[i + 1] = v.y;
    }
  }
}

// Shared-memory inputs of one segment of K steps.
template <class L>
struct Stage {
  float kh[L::K][L::NP];  // khat (k until normalised)
  float q[L::K][L::NP];
  float v[L::K][L::NP];
  float be[L::K][L::NP];  // beta (1 when ungated)
  float nk[L::K];         // ||k||
};

// Offset of step t's projections of head h in proj.
template <typename scalar_t>
__device__ __forceinline__ int64_t proj_offset(const Params<scalar_t>& p, int b, int t, int h) {
  return ((static_cast<int64_t>(b) * p.T + t) * p.H + h) * static_cast<int64_t>(p.gated ? 4 : 3) * p.n;
}

// The inputs of one segment, loaded from global memory into registers one segment ahead (so the loads are in
// flight while the current segment runs) and written to shared memory when that segment starts. Raw values
// are kept until store(): converting them at load time would wait for the loads.
template <class L, typename scalar_t>
struct Prefetch {
  static constexpr int M = (L::K * L::NP + L::kThreads - 1) / L::kThreads;  // elements per thread
  scalar_t k[M], v[M], q[M], bt[M];

  // Steps [t0, t0 + len) of head h, batch b; zeros beyond n and len.
  __device__ __forceinline__ void load(const Params<scalar_t>& p, int b, int h, int t0, int len) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int idx = threadIdx.x + m * L::kThreads, s = idx / L::NP, j = idx - s * L::NP;
      k[m] = v[m] = q[m] = bt[m] = scalar_t(0.f);
      if (idx < L::K * L::NP && s < len && j < p.n) {
        const scalar_t* src = p.proj + proj_offset(p, b, t0 + s, h);
        k[m] = src[j], v[m] = src[p.n + j], q[m] = src[2 * p.n + j];
        if (p.gated) bt[m] = src[3 * p.n + j];
      }
    }
  }

  // Writes k (not yet normalised), v, q and beta into st. The caller synchronises around it.
  __device__ __forceinline__ void store(const Params<scalar_t>& p, int h, Stage<L>& st) const {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int idx = threadIdx.x + m * L::kThreads, s = idx / L::NP, j = idx - s * L::NP;
      if (idx < L::K * L::NP) {
        st.kh[s][j] = static_cast<float>(k[m]), st.v[s][j] = static_cast<float>(v[m]);
        st.q[s][j] = static_cast<float>(q[m]);
        st.be[s][j] = !p.gated ? 1.f : j < p.n ? sigmoid(static_cast<float>(bt[m]) + p.b_beta[h * p.n + j]) : 0.f;
      }
    }
  }
};

// Replaces k by khat = k / (||k|| + 1e-6) for the len staged steps (one warp per step) and records ||k||.
// Call between two __syncthreads.
template <class L>
__device__ __forceinline__ void normalize_keys(Stage<L>& st, int len) {
  constexpr int NP = L::NP;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int s = warp; s < len; s += L::NW) {
    const float a = lane < NP ? st.kh[s][lane] : 0.f, c = lane + 32 < NP ? st.kh[s][lane + 32] : 0.f;
    const float norm = sqrtf(group_sum<32>(a * a + c * c));
    const float den = norm + 1e-6f;
    if (lane < NP) st.kh[s][lane] = a / den;
    if (lane + 32 < NP) st.kh[s][lane + 32] = c / den;
    if (lane == 0) st.nk[s] = norm;
  }
}

// One forward step of one thread's J state elements (row `row`, columns from c0):
//   r = S khat (row sum), d = v - r, S = tanh(beta S + d khat), returns u = S q (row sum); d through `d_out`.
template <class L>
__device__ __forceinline__ float step_forward(float (&S)[L::J], const Stage<L>& st, int s, int row, int c0,
                                              float& d_out) {
  float kh[L::J], q[L::J];
  load_cols<L::J>(&st.kh[s][c0], kh);
  load_cols<L::J>(&st.q[s][c0], q);
  float r = 0.f;
#pragma unroll
  for (int j = 0; j < L::J; ++j) r = fmaf(S[j], kh[j], r);
  r = group_sum<L::TPR>(r);
  const float d = st.v[s][row] - r, be = st.be[s][row];
  float u = 0.f;
#pragma unroll
  for (int j = 0; j < L::J; ++j) {
    S[j] = tanhf(fmaf(be, S[j], d * kh[j]));
    u = fmaf(S[j], q[j], u);
  }
  d_out = d;
  return group_sum<L::TPR>(u);
}

}  // namespace elman::cuda::delta
