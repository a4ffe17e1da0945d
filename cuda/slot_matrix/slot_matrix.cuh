// Device pieces shared by the slot-matrix (E63m) forward and backward kernels: the thread layout, the staging of
// the input rows in shared memory, the block reduction of the per-slot sums, and the forward step walk (the
// forward kernel runs it over all T; the backward runs it to recompute one segment from its checkpoint).
//
// The recurrence (ops/slot_matrix/reference.h) mixes the N slots through W_r, so the whole N x D state of one
// batch element is one block's: grid = B blocks.
//   * A thread owns the columns c = threadIdx.x + j * blockDim.x (j < C, c < D: coalesced) of all N rows:
//     S[N][C] fp32 registers for the whole launch. Blocks have at most kThreads = 256 threads (8 warps: 255
//     registers per thread), so a thread holds ceil(D / 256) columns; the kernels are compiled for C = 5 (D <=
//     1280, the 100M widths) and a wider variant (geometry.h: big_cols), and D beyond it is an error (the state
//     and, in the backward, its gradient, 2 N D fp32 values, must fit in one block's registers).
//   * Inputs: step t's row of proj, [k | q | wx | wa] (2D + 2N values), is copied into a ring of kStages rows of
//     shared memory by cp.async kStages - 1 steps ahead (no registers held for prefetching; the step's barrier
//     publishes the row); threads read their columns of k and q and lane i reads wx_i, wa_i from there.
//   * Per step the only coupling of columns is a handful of length-D dot products, one pair per slot: S k and
//     S q in the forward, G . S and G k in the backward. Each thread's 2N partial sums (padded to M = 2 NP, NP =
//     N rounded up to a power of two) are reduce-scattered across the warp by xor shuffles (the first level is
//     done per slot as soon as its pair is known, so only NP values stay live; M - 1 + 5 - log2 M shuffles in
//     all, not 5 M), one partial per warp goes to shared memory (double buffered), one __syncthreads, then lane
//     l of every warp adds the warps' partials of value l.
//   * The N-vector math (tanh, W_r r, sigmoid) runs on lane i = slot i of every warp (W_r from shared memory) and
//     is broadcast to the warp's lanes by shuffles; no second barrier.
//   * The forward fuses the end of step t with the start of step t + 1: after the update, the partial sums of
//     S_t q_t (-> y_t) and S_t k_{t+1} (-> r_{t+1}) are reduced in the same round, so one barrier per step.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common/cp_async.cuh"
#include "cuda/common/sigmoid.cuh"
#include "cuda/slot_matrix/geometry.h"

namespace elman::cuda::slots {

constexpr int kSegment = 16;  // K: steps per segment = the checkpoint interval
constexpr int kStages = 4;    // rows of proj in the shared-memory ring (cp.async kStages - 1 steps ahead)
constexpr int kMaxWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;

template <int N>
__host__ __device__ constexpr int pad_pow2() {
  int p = 1;
  while (p < N) p *= 2;
  return p;
}

// Calls f(std::integral_constant<int, N>{}) for 1 <= slots <= 16.
template <typename F>
void dispatch_slots(int64_t slots, F&& f) {
  switch (slots) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 9: f(std::integral_constant<int, 9>{}); break;
    case 10: f(std::integral_constant<int, 10>{}); break;
    case 11: f(std::integral_constant<int, 11>{}); break;
    case 12: f(std::integral_constant<int, 12>{}); break;
    case 13: f(std::integral_constant<int, 13>{}); break;
    case 14: f(std::integral_constant<int, 14>{}); break;
    case 15: f(std::integral_constant<int, 15>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    default: TORCH_CHECK(false, "slot_matrix: ", slots, " slots are not supported; use --slots from 1 to 16");
  }
}

// Columns per thread for D: ceil(D / kThreads).
inline int64_t cols_needed(int64_t D) { return (D + kThreads - 1) / kThreads; }

// Calls f(integral_constant N, integral_constant C) with the narrowest compiled column count C that holds D.
template <typename F>
void dispatch_layout(int64_t slots, int64_t D, F&& f) {
  dispatch_slots(slots, [&](auto n) {
    constexpr int N = decltype(n)::value, big = big_cols(N);
    const int64_t cols = cols_needed(D);
    TORCH_CHECK(cols <= big, "slot_matrix: D = ", D, " is too wide for the kernels with ", N, " slots (at most ",
                max_width(N), ": the state and its gradient, 2 N D fp32 values, live in one block's registers); "
                "use a smaller dim or expansion, or fewer --slots");
    if (cols <= kSmallCols) f(n, std::integral_constant<int, kSmallCols>{});
    else if constexpr (big > kSmallCols) f(n, std::integral_constant<int, big>{});
  });
}

// Everything either kernel reads or writes (unused pointers are null).
template <typename scalar_t>
struct Params {
  const scalar_t* proj;  // [B,T,2D+2N] = [k | q | wx | wa]
  const float* W_r;      // [N,N]
  const float* b;        // [N]
  const float* b_alpha;  // [N]
  const float* S0;       // forward: [B,N,D]
  float* ckpt;           // [B,nseg,N,D]: written by the forward, read by the backward
  scalar_t* y;           // forward: [B,T,N]
  float* S_T;            // forward: [B,N,D]
  const scalar_t* dy;    // backward: [B,T,N], or null (zero)
  const float* dS_T;     // backward: [B,N,D], or null (zero)
  scalar_t* dproj;       // backward: [B,T,2D+2N]
  float* dpar;           // backward: [B, N*N + 2N] per-batch sums of [dW_r | db | db_alpha]
  float* dS0;            // backward: [B,N,D]
  float* scratch;        // backward: [B,K,N,D] the recomputed states of the current segment
  int B, T, D, nseg;
  int pitch;             // elements between rows of the shared-memory ring (a multiple of 16 bytes)
  bool vec16;            // rows of proj are 16-byte aligned and sized: cp.async 16 bytes, else 4
};

// Row t of proj in the ring (dynamic shared memory).
template <typename scalar_t>
__device__ __forceinline__ scalar_t* ring_row(scalar_t* ring, const Params<scalar_t>& p, int t) {
  return ring + (t % kStages) * p.pitch;
}

// Starts copying row t of batch element b's proj ([k | q | wx | wa], P = 2D + 2N values) into the ring; the
// caller commits the group.
template <int N, typename scalar_t>
__device__ __forceinline__ void issue_row(const Params<scalar_t>& p, scalar_t* ring, int b, int t) {
  const int64_t P = 2 * static_cast<int64_t>(p.D) + 2 * N;
  const char* src = reinterpret_cast<const char*>(p.proj + (static_cast<int64_t>(b) * p.T + t) * P);
  char* dst = reinterpret_cast<char*>(ring_row(ring, p, t));
  const int step = p.vec16 ? 16 : 4, bytes = static_cast<int>(P * sizeof(scalar_t));
  for (int o = threadIdx.x * step; o < bytes; o += blockDim.x * step) cp_async(dst + o, src + o, p.vec16);
}

// Precise sigmoid (cuda/common/sigmoid.cuh) and tanhf, no fast-math: fp32 results agree with the LibTorch reference
// to ~1e-6.

// Shared memory common to both kernels (the ring of proj rows is dynamic shared memory after it).
template <int N>
struct Common {
  static constexpr int NP = pad_pow2<N>(), M = 2 * NP;
  float Wr[N][N + 1];  // W_r, rows padded (lane i reads row i in the forward, column i in the backward)
  float b[N], ba[N];
  float part[2][kMaxWarps][M];  // per-warp partial sums, double buffered
};

// Per-step N-vectors of a recomputed segment (backward only).
template <int N>
struct Record {
  static constexpr int NP = pad_pow2<N>();
  float r[kSegment][NP], v[kSegment][NP], al[kSegment][NP];  // r = tanh(S k), v, alpha
  float dy[kSegment][NP];                                    // the segment's incoming dy
  float du[kSegment][NP];                                    // du = dy (1 - y^2): gradient at u = S_t q
  float dpv[kSegment][NP], da[kSegment][NP];                 // d(W_r r + wx + b), d(wa + b_alpha)
};

template <int N>
__device__ __forceinline__ void load_common(Common<N>& sm, const float* W_r, const float* b, const float* ba) {
  for (int e = threadIdx.x; e < N * N; e += blockDim.x) sm.Wr[e / N][e % N] = W_r[e];
  if (threadIdx.x < N) sm.b[threadIdx.x] = b[threadIdx.x], sm.ba[threadIdx.x] = ba[threadIdx.x];
}

// The first reduce-scatter level of slot i's pair (x = value i, y = value NP + i) at xor offset 1: the lane with
// bit 0 clear keeps the pair sum of x, its partner that of y.
__device__ __forceinline__ float pair_level(float x, float y, int lane) {
  const bool upper = lane & 1;
  return (upper ? y : x) + __shfl_xor_sync(kFull, upper ? x : y, 1);
}

// The remaining reduce-scatter levels over a[0..CNT) at xor offsets OFF, 2 OFF, ..: a lane keeps half of its
// values (the upper half when its offset bit is set) and adds its partner's copy of that half, until one value
// is left (then whole sums). Afterwards lane l < M holds the warp sum of value `base`, distinct for l < M.
template <int CNT, int OFF, int NP>
__device__ __forceinline__ void reduce_scatter(float (&a)[NP], int lane, int& base) {
  if constexpr (OFF < 32) {
    if constexpr (CNT > 1) {
      constexpr int half = CNT / 2;
      const bool upper = lane & OFF;
#pragma unroll
      for (int i = 0; i < half; ++i) {
        const float send = upper ? a[i] : a[i + half];
        const float keep = upper ? a[i + half] : a[i];
        a[i] = keep + __shfl_xor_sync(kFull, send, OFF);
      }
      if (upper) base += half;
      reduce_scatter<half, OFF * 2, NP>(a, lane, base);
    } else {
      a[0] += __shfl_xor_sync(kFull, a[0], OFF);
      reduce_scatter<1, OFF * 2, NP>(a, lane, base);
    }
  }
}

// Block sums of the M = 2 NP values per thread, given after the first level (a[i] = pair_level(value i, value
// NP + i)): afterwards lane l < M of every warp returns the block sum of value l (lanes >= M return 0). One
// __syncthreads; flips buf (the partials are double buffered, so the next reduction may write while this one's
// partials are still being read).
template <int N>
__device__ __forceinline__ float block_sums(Common<N>& sm, float (&a)[Common<N>::NP], int& buf) {
  constexpr int NP = Common<N>::NP, M = Common<N>::M;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
  int base = (lane & 1) ? NP : 0;
  reduce_scatter<NP, 2, NP>(a, lane, base);
  if (lane < M) sm.part[buf][warp][base] = a[0];
  __syncthreads();
  float tot = 0.f;
  if (lane < M)
    for (int w = 0; w < nw; ++w) tot += sm.part[buf][w][lane];
  buf ^= 1;
  return tot;
}

// The thread's columns of a row of D floats (zero beyond D), and their store.
template <int N, int C>
__device__ __forceinline__ void load_state(const float* src, int D, float (&S)[N][C]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int j = 0; j < C; ++j) {
      const int c = threadIdx.x + j * blockDim.x;
      S[i][j] = c < D ? src[static_cast<int64_t>(i) * D + c] : 0.f;
    }
}
template <int N, int C>
__device__ __forceinline__ void store_state(float* dst, int D, const float (&S)[N][C]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int j = 0; j < C; ++j) {
      const int c = threadIdx.x + j * blockDim.x;
      if (c < D) dst[static_cast<int64_t>(i) * D + c] = S[i][j];
    }
}
// The thread's columns of D values from a ring row at offset `off` (zero beyond D).
template <int C, typename scalar_t>
__device__ __forceinline__ void load_cols(const scalar_t* row, int off, int D, float (&out)[C]) {
#pragma unroll
  for (int j = 0; j < C; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    out[j] = c < D ? static_cast<float>(row[off + c]) : 0.f;
  }
}

// Walks steps [t0, t0 + len) of batch element b from the state S (registers; on return the state after the last
// step).
//   Forward (rec == nullptr): writes y, and the state at every segment start to ckpt.
//   Recompute (rec != nullptr, len <= K): writes the state before every step s to scratch[s] and the step's r, v,
//     alpha, du = dy (1 - y^2) to rec (rec->dy must hold the segment's dy; the first barrier here publishes it).
// Lane i < N of every warp carries slot i's scalars; everything else is per column. Ends with no copies in flight.
template <int N, int C, typename scalar_t>
__device__ __forceinline__ void walk_forward(const Params<scalar_t>& p, Common<N>& sm, scalar_t* ring,
                                             Record<N>* rec, int b, int t0, int len, float (&S)[N][C], int& buf) {
  constexpr int NP = Common<N>::NP;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, li = lane < N ? lane : 0, D = p.D;
  const int t_end = t0 + len;

  // Rows t0 .. t0 + kStages - 2 in flight; rows t0 and t0 + 1 waited for and published.
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (t0 + i < t_end) issue_row<N>(p, ring, b, t0 + i);
    cp_async_commit();
  }
  cp_async_wait<kStages - 3>();
  __syncthreads();

  // r_{t0} = tanh(S_{t0} k_{t0}): lane i < N holds the sum for slot i.
  float rk;
  {
    float k[C], a[NP];
    load_cols<C>(ring_row(ring, p, t0), 0, D, k);
#pragma unroll
    for (int i = 0; i < NP; ++i) a[i] = 0.f;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      float x = 0.f;
#pragma unroll
      for (int j = 0; j < C; ++j) x = fmaf(S[i][j], k[j], x);
      a[i] = pair_level(x, 0.f, lane);
    }
    rk = block_sums<N>(sm, a, buf);
  }

  for (int t = t0; t < t_end; ++t) {
    const int s = t - t0;
    // Row t + kStages - 1 goes into the slot of row t - 1, which every thread finished with before the last
    // barrier. One group per step, empty past the end.
    if (t + kStages - 1 < t_end) issue_row<N>(p, ring, b, t + kStages - 1);
    cp_async_commit();
    if (rec) {
      store_state<N, C>(p.scratch + (static_cast<int64_t>(b) * kSegment + s) * N * D, D, S);
    } else if (t % kSegment == 0) {
      store_state<N, C>(p.ckpt + (static_cast<int64_t>(b) * p.nseg + t / kSegment) * N * D, D, S);
    }
    const scalar_t* row = ring_row(ring, p, t);

    // Slot scalars on lane i: r_i, v_i = tanh(sum_j W_r[i][j] r_j + wx_i + b_i), alpha_i.
    const float r = tanhf(rk);
    float pv = static_cast<float>(row[2 * D + li]) + sm.b[li];
#pragma unroll
    for (int j = 0; j < N; ++j) pv = fmaf(sm.Wr[li][j], __shfl_sync(kFull, r, j), pv);
    const float v = tanhf(pv), al = sigmoid(static_cast<float>(row[2 * D + N + li]) + sm.ba[li]);
    if (rec && warp == 0 && lane < N) rec->r[s][lane] = r, rec->v[s][lane] = v, rec->al[s][lane] = al;

    // S = diag(alpha) S + diag(1 - alpha) v k_t^T on the thread's columns; then the partial sums of S q_t and
    // S k_{t+1} (zero after the last step).
    float k[C], q[C], kn[C], a[NP];
    load_cols<C>(row, 0, D, k);
    load_cols<C>(row, D, D, q);
    if (t + 1 < t_end) {
      load_cols<C>(ring_row(ring, p, t + 1), 0, D, kn);
    } else {
#pragma unroll
      for (int j = 0; j < C; ++j) kn[j] = 0.f;
    }
#pragma unroll
    for (int i = 0; i < NP; ++i) a[i] = 0.f;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const float ai = __shfl_sync(kFull, al, i), ci = (1.f - ai) * __shfl_sync(kFull, v, i);
      float x = 0.f, y = 0.f;
#pragma unroll
      for (int j = 0; j < C; ++j) {
        S[i][j] = fmaf(ai, S[i][j], ci * k[j]);
        x = fmaf(S[i][j], kn[j], x);
        y = fmaf(S[i][j], q[j], y);
      }
      a[i] = pair_level(x, y, lane);
    }
    cp_async_wait<kStages - 3>();  // row t + 2, published by the barrier in block_sums
    const float tot = block_sums<N>(sm, a, buf);
    rk = tot;  // lanes < N: (S_t k_{t+1})_i
    if (warp == 0 && lane >= NP && lane < NP + N) {
      const float yv = tanhf(tot);  // lanes NP + i: u_i = (S_t q_t)_i
      if (rec) rec->du[s][lane - NP] = rec->dy[s][lane - NP] * (1.f - yv * yv);
      else p.y[(static_cast<int64_t>(b) * p.T + t) * N + lane - NP] = static_cast<scalar_t>(yv);
    }
  }
  cp_async_wait<0>();
}

// Launch geometry for D columns and rows of P values of `elem` bytes: the block size (ceil(D / columns per
// thread) rounded up to a warp) and the dynamic shared memory of the ring (kStages rows of `pitch` elements, a
// multiple of 16 bytes); raises the kernel's dynamic shared memory limit to it.
struct Launch {
  int threads, smem, pitch;
};
template <typename Kernel>
Launch plan_launch(Kernel kernel, int64_t D, int64_t P, int elem) {
  const int64_t cols = cols_needed(D), threads = (D + cols - 1) / cols;
  const int64_t row_bytes = (P * elem + 15) / 16 * 16, smem = kStages * row_bytes;
  cudaFuncAttributes attr;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  int device = 0, optin = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  TORCH_CHECK(smem + static_cast<int64_t>(attr.sharedSizeBytes) <= optin, "slot_matrix: D = ", D, " needs ", smem,
              " bytes of shared memory for the staged input rows, more than the GPU's ", optin);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  return {static_cast<int>((threads + 31) / 32 * 32), static_cast<int>(smem), static_cast<int>(row_bytes / elem)};
}

}  // namespace elman::cuda::slots
