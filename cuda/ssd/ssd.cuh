// Device pieces shared by the SSD scan's forward and backward kernels (ssd_fwd.cu, ssd_bwd.cu): the chunk
// geometry, the block-wide 16 x 16-tile products (tensor cores for bf16, CUDA-core FMAs for fp32), the
// global-to-shared tile loads and the within-chunk log-decay scan.
//
// Both kernels run one block of kThreads = 512 threads (16 warps) per (batch b, head h) and walk the chunks of
// L steps in order (backward: in reverse), with every operand of a chunk in shared memory. Products write
// 16 x 16 output tiles; the tiles of the products of one phase are dealt round-robin over the 16 warps.
//
// Operand type S (the type x, B and C arrive in; y and dx leave in it):
//  * S = bf16: L = 64. Products are nvcuda::wmma m16n16k16 bf16 MMAs with fp32 accumulation; operands that
//    are computed inside the kernel (the decay-masked C B^T, the state, ...) are rounded to bf16 for them,
//    sums and the carried state stay fp32.
//  * S = float: L = 32 (the fp32 buffers of L = 64 would not fit in shared memory). Products are fp32 FMAs
//    in the same 16 x 16 tiles: lane l of a warp owns row l / 2 and the 8 columns 8 (l % 2) .. + 7 of a tile.
// Shared-memory rows are padded (bf16 by 8 elements, fp32 by 4) so that the 16-row tile loads spread over
// the banks; every buffer starts 128-byte aligned (wmma needs 32).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common/reduce.cuh"
#include "cuda/common/tile_atomic.cuh"

namespace elman::cuda::ssd {

constexpr int kP = 64;    // headdim
constexpr int kN = 128;   // d_state
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kAll = 0xffffffffu;

using bf16 = __nv_bfloat16;

template <typename S>
struct Cfg;
template <>
struct Cfg<bf16> {
  static constexpr int L = 64, kPad = 8;
};
template <>
struct Cfg<float> {
  static constexpr int L = 32, kPad = 4;
};

template <typename T>
struct Tag {  // host dispatch over the operand type
  using type = T;
};

__host__ __device__ constexpr size_t align128(size_t n) { return (n + 127) / 128 * 128; }

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(bf16 v) { return __bfloat162float(v); }
template <typename S>
__device__ __forceinline__ S from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float v) {
  return __float2bfloat16_rn(v);
}

// 16 x 16-tile products C (+)= A B. Layouts: A (M x K) is row-major (element (m,k) at A[m lda + k]) when ARow,
// else column-major (A[k lda + m]); B (K x Nc) is row-major (B[k ldb + n]) when BRow, else column-major
// (B[n ldb + k]). mma() adds the product of row tile mt of A and column tile nt of B over K to one tile.
template <typename S>
struct Mma;

template <>
struct Mma<bf16> {
  using Acc = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;
  static __device__ __forceinline__ void zero(Acc& c) { nvcuda::wmma::fill_fragment(c, 0.f); }
  static __device__ __forceinline__ void load(Acc& c, const float* p, int ld) {
    nvcuda::wmma::load_matrix_sync(c, p, ld, nvcuda::wmma::mem_row_major);
  }
  static __device__ __forceinline__ void store(float* p, int ld, const Acc& c) {
    nvcuda::wmma::store_matrix_sync(p, c, ld, nvcuda::wmma::mem_row_major);
  }
  // Adds the tile to global fp32 memory with float4 atomics, through this warp's 256-float shared scratch.
  static __device__ __forceinline__ void atomic_add(float* p, int64_t ld, const Acc& c, float* scratch) {
    atomic_add_tile(p, ld, c, scratch);
  }
  static __device__ __forceinline__ void scale(Acc& c, float s) {
#pragma unroll
    for (int i = 0; i < c.num_elements; ++i) c.x[i] *= s;
  }
  template <bool ARow, bool BRow, int K>
  static __device__ __forceinline__ void mma(Acc& c, const bf16* A, int lda, int mt, const bf16* B, int ldb, int nt) {
    using namespace nvcuda;
    using LA = std::conditional_t<ARow, wmma::row_major, wmma::col_major>;
    using LB = std::conditional_t<BRow, wmma::row_major, wmma::col_major>;
#pragma unroll
    for (int k0 = 0; k0 < K; k0 += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, LA> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, LB> b;
      wmma::load_matrix_sync(a, ARow ? A + 16 * mt * lda + k0 : A + k0 * lda + 16 * mt, lda);
      wmma::load_matrix_sync(b, BRow ? B + k0 * ldb + 16 * nt : B + 16 * nt * ldb + k0, ldb);
      wmma::mma_sync(c, a, b, c);
    }
  }
};

template <>
struct Mma<float> {
  struct Acc {
    float v[8];
  };
  // This lane's row and first column inside a tile.
  static __device__ __forceinline__ int row() { return (threadIdx.x & 31) >> 1; }
  static __device__ __forceinline__ int col() { return (threadIdx.x & 1) * 8; }
  static __device__ __forceinline__ void zero(Acc& c) {
#pragma unroll
    for (int i = 0; i < 8; ++i) c.v[i] = 0.f;
  }
  static __device__ __forceinline__ void load(Acc& c, const float* p, int ld) {
    const float* q = p + row() * ld + col();
#pragma unroll
    for (int i = 0; i < 8; ++i) c.v[i] = q[i];
  }
  static __device__ __forceinline__ void store(float* p, int ld, const Acc& c) {
    float* q = p + row() * ld + col();
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = c.v[i];
  }
  // Adds the tile to global fp32 memory (row-major, ld a multiple of 4, p 16-byte aligned) with float4 atomics
  // straight from the registers (a lane holds 8 consecutive elements of one row); the scratch is unused.
  static __device__ __forceinline__ void atomic_add(float* p, int64_t ld, const Acc& c, float*) {
    float* q = p + row() * ld + col();
    atomicAdd(reinterpret_cast<float4*>(q), make_float4(c.v[0], c.v[1], c.v[2], c.v[3]));
    atomicAdd(reinterpret_cast<float4*>(q + 4), make_float4(c.v[4], c.v[5], c.v[6], c.v[7]));
  }
  static __device__ __forceinline__ void scale(Acc& c, float s) {
#pragma unroll
    for (int i = 0; i < 8; ++i) c.v[i] *= s;
  }
  template <bool ARow, bool BRow, int K>
  static __device__ __forceinline__ void mma(Acc& c, const float* A, int lda, int mt, const float* B, int ldb, int nt) {
    const int r = 16 * mt + row(), n0 = 16 * nt + col();
    const float* a = ARow ? A + r * lda : A + r;
    const float* b = BRow ? B + n0 : B + n0 * ldb;
#pragma unroll 4
    for (int k = 0; k < K; ++k) {
      const float av = ARow ? a[k] : a[k * lda];
#pragma unroll
      for (int i = 0; i < 8; ++i) c.v[i] = fmaf(av, BRow ? b[k * ldb + i] : b[i * ldb + k], c.v[i]);
    }
  }
};

// Calls body(mt, nt) for every 16 x 16 tile of an M x Nc output that this warp owns: tile t = mt (Nc / 16) + nt
// goes to warp (t + rot) % kWarps, so a phase's products continue the round-robin where the previous one ended
// (rot = the number of tiles dealt before).
template <int M, int Nc, class F>
__device__ __forceinline__ void for_my_tiles(int rot, F&& body) {
  constexpr int tn = Nc / 16, tiles = (M / 16) * tn;
  const int warp = threadIdx.x >> 5;
  for (int t = ((warp - rot) % kWarps + kWarps) % kWarps; t < tiles; t += kWarps) body(t / tn, t % tn);
}
template <int M, int Nc>
constexpr int tiles_of() {
  return (M / 16) * (Nc / 16);
}

// dst [Rows][ld] (shared) <- rows r < valid of src (row r at src + r stride, W elements), zero rows beyond.
// 16-byte vectors: src rows and dst rows must be 16-byte aligned (the host checks the tensors).
template <typename S, int Rows, int W>
__device__ __forceinline__ void load_tile(S* dst, int ld, const S* __restrict__ src, int64_t stride, int valid) {
  constexpr int V = 16 / sizeof(S), per_row = W / V;
  for (int i = threadIdx.x; i < Rows * per_row; i += kThreads) {
    const int r = i / per_row, c = (i - r * per_row) * V;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (r < valid) v = __ldg(reinterpret_cast<const uint4*>(src + r * stride + c));
    *reinterpret_cast<uint4*>(dst + r * ld + c) = v;
  }
}

// Asynchronous global-to-shared copies (cp.async, sm_80+): a thread's copies are complete after its
// cp_async_wait_all(), and visible to the other threads after a __syncthreads() that follows it.
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// load_tile's layout with asynchronous copies for the rows r < valid (zeros stored directly beyond).
template <typename S, int Rows, int W>
__device__ __forceinline__ void async_tile(S* dst, int ld, const S* __restrict__ src, int64_t stride, int valid) {
  constexpr int V = 16 / sizeof(S), per_row = W / V;
  for (int i = threadIdx.x; i < Rows * per_row; i += kThreads) {
    const int r = i / per_row, c = (i - r * per_row) * V;
    if (r < valid) cp_async16(dst + r * ld + c, src + r * stride + c);
    else *reinterpret_cast<uint4*>(dst + r * ld + c) = make_uint4(0u, 0u, 0u, 0u);
  }
}

// The within-chunk log-decays of one head (run by one whole warp): a_i = sum_{k <= i} dt_k A in double (so that
// the differences a_i - a_j keep their digits however negative a gets), ea_i = exp(a_i), e2e_i =
// exp(a_{L-1} - a_i) and w_i = e2e_i dt_i. Padded steps have dt = 0.
template <int L>
__device__ __forceinline__ void chunk_decays(const float* dts, float A, double* ad, float* ea, float* e2e, float* ws) {
  constexpr int E = L / 32;  // steps per lane: lane owns steps lane E .. lane E + E - 1
  const int lane = threadIdx.x & 31;
  double v[E], s = 0;
#pragma unroll
  for (int e = 0; e < E; ++e) v[e] = s += static_cast<double>(dts[lane * E + e]) * A;
  double incl = s;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const double o = __shfl_up_sync(kAll, incl, off);
    if (lane >= off) incl += o;
  }
  double before = __shfl_up_sync(kAll, incl, 1);
  if (lane == 0) before = 0;
  const double last = __shfl_sync(kAll, incl, 31);
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int i = lane * E + e;
    const double a = before + v[e];
    ad[i] = a;
    ea[i] = expf(static_cast<float>(a));
    e2e[i] = expf(static_cast<float>(last - a));
    ws[i] = e2e[i] * dts[i];
  }
}

// exp(a_i - a_j) for j <= i, else 0.
__device__ __forceinline__ float decay(const double* ad, int i, int j) {
  return j <= i ? expf(static_cast<float>(ad[i] - ad[j])) : 0.f;
}

}  // namespace elman::cuda::ssd
