// Device pieces shared by the gated delta rule's kernels (gated_delta_fwd.cu, gated_delta_bwd.cu, the preparation):
// the tile geometry, block-wide matrix products on shared-memory tiles (one templated function: bf16 tensor-core
// MMA through nvcuda::wmma with fp32 accumulation, or an fp32 CUDA-core product), tile copies (plain and cp.async)
// and conversions.
//
// Block: kThreads = 512 threads (16 warps); the state passes run one block per (batch b, head h, V tile of VT
// columns), VT = 64 for bf16 operands, 32 for fp32 operands (their tiles take twice the bytes). Chunk length L = 64,
// key dim K = 128.
//
// mm<T, M, N>(C, ldc, acc, cscale, terms...): C[M,N] = (acc ? cscale C : 0) + sum over terms of opA(t) opB(t),
// where a term (Term) names A [M, kd] and B [kd, N] as shared-memory matrices, each either as stored (row-major
// with leading dimension ld) or transposed (the stored matrix is [kd, M] resp. [N, kd]). C is fp32, row-major,
// in shared or global memory. Every output element (bf16: every 16 x 16 tile) belongs to one fixed thread
// (warp) whatever the terms, so consecutive calls on the same C need no barrier between them; the caller puts
// __syncthreads() between a call and any read of C by other threads.
//   bf16: warp w owns the 16 x 16 output tiles w, w + 16, ... (row-major tile order); per tile and term, kd / 16
//         m16n16k16 MMAs from wmma fragments loaded straight from shared memory (row_major for a stored operand,
//         col_major for a transposed one). Requirements: 32-byte aligned matrices, ld a multiple of 8 elements
//         (fp32 C: of 4), M, N, kd multiples of 16.
//   fp32: thread (ty = tid / 16, tx = tid % 16) owns rows ty + 32 i and columns tx + 16 j (M a multiple of 32,
//         N of 16); a plain FMA loop over kd reading both operands from shared memory.
// mm_out<T, M, N>(C, ldc, scratch, terms...): the products written to a C of the operand type T.
#pragma once
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common/cp_async.cuh"
#include "cuda/common/reduce.cuh"
#include "cuda/common/vec.cuh"

namespace elman::cuda::gdn {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kL = 64;    // chunk length (ops::kGatedDeltaChunk)
constexpr int kK = 128;   // key head dim

template <typename T>
struct Geo {
  static constexpr bool kBf16 = std::is_same<T, __nv_bfloat16>::value;
  static constexpr int VT = kBf16 ? 64 : 32;        // V columns per block
  static constexpr int kPad = kBf16 ? 8 : 4;        // 16 bytes of row padding against bank conflicts
  static constexpr int ldK = kK + kPad;              // operand tiles [*, K]
  static constexpr int ldL = kL + kPad;              // operand tiles [*, L]
  static constexpr int ldV = VT + kPad;              // operand tiles [*, VT]
  static constexpr int ldF = VT + 4;                 // fp32 tiles [*, VT]
};

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

// One product term of mm: opA [M, kd] times opB [kd, N]. ta: a is stored as [kd, M] (opA = a^T); tb: b is
// stored as [N, kd] (opB = b^T).
template <typename T>
struct Term {
  const T* a;
  int lda;
  bool ta;
  const T* b;
  int ldb;
  bool tb;
  int kd;
};
template <typename T>
__device__ __forceinline__ Term<T> term(const T* a, int lda, bool ta, const T* b, int ldb, bool tb, int kd) {
  return Term<T>{a, lda, ta, b, ldb, tb, kd};
}

namespace wm = nvcuda::wmma;
using AccFrag = wm::fragment<wm::accumulator, 16, 16, 16, float>;

// c += a b for one 16-deep step, with a and b read in the layouts LA, LB (wm::row_major or wm::col_major).
template <typename LA, typename LB>
__device__ __forceinline__ void mma_step(AccFrag& c, const __nv_bfloat16* a, int lda, const __nv_bfloat16* b, int ldb) {
  wm::fragment<wm::matrix_a, 16, 16, 16, __nv_bfloat16, LA> fa;
  wm::fragment<wm::matrix_b, 16, 16, 16, __nv_bfloat16, LB> fb;
  wm::load_matrix_sync(fa, a, lda);
  wm::load_matrix_sync(fb, b, ldb);
  wm::mma_sync(c, fa, fb, c);
}

__device__ __forceinline__ void mma_term(AccFrag& c, const Term<__nv_bfloat16>& t, int m0, int n0) {
  for (int k0 = 0; k0 < t.kd; k0 += 16) {
    const __nv_bfloat16* ap = t.ta ? t.a + k0 * t.lda + m0 : t.a + m0 * t.lda + k0;
    const __nv_bfloat16* bp = t.tb ? t.b + n0 * t.ldb + k0 : t.b + k0 * t.ldb + n0;
    if (!t.ta && !t.tb) mma_step<wm::row_major, wm::row_major>(c, ap, t.lda, bp, t.ldb);
    else if (!t.ta) mma_step<wm::row_major, wm::col_major>(c, ap, t.lda, bp, t.ldb);
    else if (!t.tb) mma_step<wm::col_major, wm::row_major>(c, ap, t.lda, bp, t.ldb);
    else mma_step<wm::col_major, wm::col_major>(c, ap, t.lda, bp, t.ldb);
  }
}

// A warp's 16 x 16 fp32 accumulator tile stored to C (row-major, leading dim ld a multiple of 8, 16-byte
// aligned) rounded to bf16, through `scratch` (256 floats of shared memory owned by the warp): 8 values a lane.
__device__ __forceinline__ void store_tile_bf16(__nv_bfloat16* C, int64_t ld, const AccFrag& c, float* scratch) {
  wm::store_matrix_sync(scratch, c, 16, wm::mem_row_major);
  __syncwarp();
  const int lane = threadIdx.x & 31, r = lane >> 1, c0 = (lane & 1) * 8;
  __align__(16) __nv_bfloat16 v[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = __float2bfloat16(scratch[r * 16 + c0 + j]);
  *reinterpret_cast<uint4*>(C + r * ld + c0) = *reinterpret_cast<const uint4*>(v);
  __syncwarp();  // the scratch is free for the warp's next tile
}

// C is written (or accumulated) as described above; a bf16 C (OutT) receives the products rounded to bf16 through
// `scratch`, 256 floats of shared memory per warp (acc unused).
template <typename T, int M, int N, typename OutT, class... Terms>
__device__ __forceinline__ void mm_impl(OutT* C, int ldc, bool acc, float cscale, float* scratch,
                                        const Terms&... terms) {
  static_assert(M % 32 == 0 && N % 16 == 0, "mm: M must be a multiple of 32 and N of 16");
  constexpr bool kRound = !std::is_same<OutT, float>::value;
  static_assert(!kRound || std::is_same<T, __nv_bfloat16>::value, "mm: a bf16 C takes bf16 products");
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    constexpr int TN = N / 16, tiles = (M / 16) * TN;
    const int warp = threadIdx.x >> 5;
    for (int tile = warp; tile < tiles; tile += kWarps) {
      const int m0 = (tile / TN) * 16, n0 = (tile % TN) * 16;
      AccFrag c;
      wm::fill_fragment(c, 0.f);
      if constexpr (!kRound) {
        if (acc) {
          wm::load_matrix_sync(c, C + m0 * ldc + n0, ldc, wm::mem_row_major);
#pragma unroll
          for (int i = 0; i < c.num_elements; ++i) c.x[i] *= cscale;
        }
      }
      (mma_term(c, terms, m0, n0), ...);
      if constexpr (kRound) store_tile_bf16(C + m0 * ldc + n0, ldc, c, scratch + 256 * warp);
      else wm::store_matrix_sync(C + m0 * ldc + n0, c, ldc, wm::mem_row_major);
    }
  } else if constexpr (!kRound) {
    constexpr int RI = M / 32, CJ = N / 16;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    float s[RI][CJ];
#pragma unroll
    for (int i = 0; i < RI; ++i)
#pragma unroll
      for (int j = 0; j < CJ; ++j) s[i][j] = acc ? cscale * C[(ty + 32 * i) * ldc + tx + 16 * j] : 0.f;
    auto one = [&](const Term<float>& t) {
      // Element (r, k) of opA and (k, c) of opB as strides: opA(r, k) = a[r * ar + k * ak].
      const int ar = t.ta ? 1 : t.lda, ak = t.ta ? t.lda : 1;
      const int bk = t.tb ? 1 : t.ldb, bc = t.tb ? t.ldb : 1;
      for (int k = 0; k < t.kd; ++k) {
        float av[RI], bv[CJ];
#pragma unroll
        for (int i = 0; i < RI; ++i) av[i] = t.a[(ty + 32 * i) * ar + k * ak];
#pragma unroll
        for (int j = 0; j < CJ; ++j) bv[j] = t.b[k * bk + (tx + 16 * j) * bc];
#pragma unroll
        for (int i = 0; i < RI; ++i)
#pragma unroll
          for (int j = 0; j < CJ; ++j) s[i][j] = fmaf(av[i], bv[j], s[i][j]);
      }
    };
    (one(terms), ...);
#pragma unroll
    for (int i = 0; i < RI; ++i)
#pragma unroll
      for (int j = 0; j < CJ; ++j) C[(ty + 32 * i) * ldc + tx + 16 * j] = s[i][j];
  }
}

template <typename T, int M, int N, class... Terms>
__device__ __forceinline__ void mm(float* C, int ldc, bool acc, float cscale, const Terms&... terms) {
  mm_impl<T, M, N, float>(C, ldc, acc, cscale, nullptr, terms...);
}

// C[M,N] (T, global or shared) = the products, in the operand type: bf16 rounded through `scratch` (256 floats of
// shared memory per warp), fp32 written as mm does.
template <typename T, int M, int N, class... Terms>
__device__ __forceinline__ void mm_out(T* C, int ldc, float* scratch, const Terms&... terms) {
  mm_impl<T, M, N, T>(C, ldc, false, 0.f, scratch, terms...);
}

// f(r, c) for every 16-byte piece of a rows x cols tile of T (c a multiple of 16 / sizeof(T)), over the block.
template <typename T, class F>
__device__ __forceinline__ void for_pieces(int rows, int cols, F f) {
  constexpr int E = 16 / sizeof(T);
  const int per_row = cols / E, total = rows * per_row;
  for (int i = threadIdx.x; i < total; i += kThreads) {
    const int r = i / per_row;
    f(r, (i - r * per_row) * E);
  }
}

// dst[r][c] = src[r][c] for r < rows, c < cols (dst leading dim ldd, src lds, both in elements of T), in
// 16-byte pieces: cols * sizeof(T), ldd * sizeof(T), lds * sizeof(T) and both pointers 16-byte aligned.
template <typename T>
__device__ __forceinline__ void copy_tile(T* dst, int ldd, const T* __restrict__ src, int64_t lds, int rows, int cols) {
  for_pieces<T>(rows, cols, [&](int r, int c) {
    *reinterpret_cast<uint4*>(dst + r * ldd + c) = __ldg(reinterpret_cast<const uint4*>(src + r * lds + c));
  });
}

// copy_tile by cp.async: the caller commits the group, waits for it and puts a barrier before reading dst.
template <typename T>
__device__ __forceinline__ void copy_tile_async(T* dst, int ldd, const T* src, int64_t lds, int rows, int cols) {
  for_pieces<T>(rows, cols, [&](int r, int c) { cp_async(dst + r * ldd + c, src + r * lds + c, true); });
}

// dst[r][c] = src[r][c] from shared to global memory, in 16-byte pieces (the alignment rules of copy_tile).
template <typename T>
__device__ __forceinline__ void store_tile(T* dst, int64_t ldd, const T* src, int lds, int rows, int cols) {
  for_pieces<T>(rows, cols, [&](int r, int c) {
    *reinterpret_cast<uint4*>(dst + r * ldd + c) = *reinterpret_cast<const uint4*>(src + r * lds + c);
  });
}

// dst[r][c] = scale src[r][c]: an fp32 global tile (rows 16-byte aligned, cols a multiple of 4) staged in shared
// memory in the operand type T (rows of dst 16-byte aligned).
template <typename T>
__device__ __forceinline__ void load_op(T* dst, int ldd, const float* __restrict__ src, int64_t lds, int rows,
                                        int cols, float scale) {
  for_pieces<float>(rows, cols, [&](int r, int c) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(src + r * lds + c));
    const float x[4] = {scale * v.x, scale * v.y, scale * v.z, scale * v.w};
    store<4>(dst + r * ldd + c, x);
  });
}

// dst[r][c] = src[r][c] (fp32 shared) as T, rows x cols.
template <typename T>
__device__ __forceinline__ void to_op(T* dst, int ldd, const float* src, int lds, int rows, int cols) {
  for (int i = threadIdx.x; i < rows * cols; i += kThreads) {
    const int r = i / cols, c = i - r * cols;
    dst[r * ldd + c] = from_f<T>(src[r * lds + c]);
  }
}

// Launches a kernel of these files: `blocks` blocks of kThreads with `smem` bytes of dynamic shared memory
// (opted in above the 48 KB default).
template <class Params>
void launch(void (*kernel)(const Params), int64_t blocks, size_t smem, const Params& p) {
  TORCH_CHECK(blocks < (int64_t(1) << 31), "gated_delta: too many blocks");
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(blocks), kThreads, smem, at::cuda::getCurrentCUDAStream()>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Bytes of shared memory from `off`, rounded up to 128 (every carved buffer starts 128-byte aligned).
__host__ __device__ constexpr size_t carve(size_t off, size_t bytes) { return off + ((bytes + 127) / 128) * 128; }

}  // namespace elman::cuda::gdn
