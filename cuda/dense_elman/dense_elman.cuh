// Device pieces shared by the dense Elman forward and backward kernels: the block-wide matrix-vector
// products over a batch tile (two "products", one per input dtype), the pointwise math, and the cooperative
// launch that picks the rows per block.
//
// Both kernels have the same shape: the grid is G batch groups of ceil(D / R) blocks; in each group, block g owns R
// consecutive rows of a D x D matrix M (forward: W, backward: W^T), and each step computes
// out[b, r] = sum_k M[g*R + r, k] v[b, k] for the group's batch rows b (a contiguous slice of B), where v [B, Dp]
// (the previous state, or the current dz) was written by the group's blocks during the previous step and is read
// back from L2 after the group's barrier (group_arrive / group_wait). Batch rows are independent, so the groups never
// wait for each other: G groups walk T side by side, and each step's latency (the barrier, the L2 round trip of v) is
// paid once for B / G rows instead of once for all B. The launcher picks the product (R) that lets the most groups be
// co-resident (ties: the smaller R). A product object hides how a step's product is computed:
//
// FmaProduct<R> (fp32 inputs): the R x D slice of M stays in fp32 shared memory; CUDA-core FMA, fp32 v read
// straight from L2. Thread layout of block_matvec (kThreads = 512 threads = 16 warps):
//   * warps split k in steps of kKStep = 16 columns (warp w takes steps w, w + 16, ...);
//   * inside a warp, lane = kq + 4 * bi: kq (0..3) picks 4 consecutive k of the step, bi (0..7) the batch
//     rows bi, bi + 8, bi + 16, bi + 24 of the 32-row tile. Each lane keeps an R x 4 register tile of sums.
//   Per k step a lane loads 4 x 4 elements of v (global, L1 bypassed: the buffer is rewritten during the
//   launch) and R float4 of M (shared; the 8 lanes with the same kq read the same address and the 4 kq
//   groups 64 contiguous bytes, so each load is one conflict-free wavefront), and does 16 R FMAs.
//   The next step's v is loaded before the current one is used (two register buffers in ping-pong).
//   Partial sums are reduced over kq by two halving shuffle rounds (3 R shuffles per lane), then every lane
//   writes R sums for one batch row into red[warp][b][r]; the caller sums the 16 warps after __syncthreads.
//
// MmaProduct<MT, KT, KS> (bf16 inputs): 16 MT rows per block, M in bf16 held as mma.sync A fragments for the whole
// launch (warp w owns the 16 x 16 k-tiles w, w + 16, ... of each of its MT row tiles: its first KT in registers, up to
// KS more in shared memory, read back every step), and per batch tile (32, 16 or 8 rows for MT = 1, 2, 3) the tile of v
// is first copied from L2 into shared memory with every load in flight at once (the step is bound by L2 latency
// otherwise: measured 8 us per step at D = 1280 with the FMA product reading v from L2 in 16-byte pieces), then each
// warp runs m16n8k16 bf16 MMAs with fp32 accumulation over its k-tiles for the n-tiles of 8 batch rows that hold rows
// of the group, and writes its partial sums to red[warp][r][b]. MT = 3 takes a third of the blocks per group (D = 1280:
// 27 instead of 80), so four batch groups fit on an H100 where one did.
#pragma once
#include <ATen/cuda/CUDAContext.h>
#include <c10/util/BFloat16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "cuda/common/cuda_check.h"
#include "cuda/common/sigmoid.cuh"

namespace elman::cuda::dense {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kKStep = 16;  // k columns per warp step: 4 lane groups x 4 consecutive k
constexpr int kBTile = 32;  // FmaProduct: batch rows per tile: 8 lane groups x 4 rows per lane
constexpr int kMaxRows = 16;

enum : int { kTanh = 0, kLinear = 1, kGatedTanh = 2 };

// Row pitch of the reduction buffer: odd, so that lanes writing different batch rows hit different banks.
__host__ __device__ constexpr int red_pitch(int R) { return R | 1; }

inline int64_t padded_width(int64_t D) { return (D + kKStep - 1) / kKStep * kKStep; }

// Dynamic shared memory of a kernel: its product's, then the per-row carried state [B][R] in fp32 (forward:
// h_{t-1}; backward: the gate term g alpha).
template <class Prod>
size_t smem_bytes(int64_t Dp, int64_t B) {
  return Prod::smem_bytes(Dp) + sizeof(float) * static_cast<size_t>(Prod::kRows) * B;
}

// Four consecutive elements of the broadcast vector as fp32, read through L2 only (ld.global.cg): blocks
// rewrite the buffer every other step, so a line cached in L1 from two steps ago would be stale.
__device__ __forceinline__ float4 load4_cg(const float* p) { return __ldcg(reinterpret_cast<const float4*>(p)); }

// tanh to ~1e-7 relative whatever the compiler flags (--use_fast_math turns tanhf into tanh.approx.f32,
// ~5e-4 relative): an odd polynomial near 0, where 1 - e^{-2|x|} would cancel, and (1 - e)/(1 + e) elsewhere.
__device__ __forceinline__ float tanh_f(float x) {
  const float ax = fabsf(x);
  if (ax < 0.125f) {
    const float x2 = x * x;  // x - x^3/3 + 2x^5/15 - 17x^7/315; the next term is < 2e-10 here
    return x * fmaf(x2, fmaf(x2, fmaf(x2, -17.f / 315.f, 2.f / 15.f), -1.f / 3.f), 1.f);
  }
  const float e = __expf(-2.f * ax);
  return copysignf(__fdividef(1.f - e, 1.f + e), x);
}

// Fills the shared slice with rows row0 .. row0 + R - 1 of src (fp32 [D,D], global), zero for rows or
// columns >= D. Layout: for each k step ks, the R rows' 16 columns lie together,
// M[(ks * R + r) * 16 + kk] = src[row0 + r][ks * 16 + kk], so the R loads of a step use immediate offsets.
template <int R>
__device__ __forceinline__ void load_slice(float* __restrict__ M, const float* __restrict__ src, int row0, int D,
                                           int Dp) {
  for (int i = threadIdx.x; i < R * Dp; i += kThreads) {
    const int ks = i / (R * kKStep), rem = i - ks * (R * kKStep);
    const int r = rem / kKStep, k = ks * kKStep + (rem - r * kKStep), row = row0 + r;
    M[i] = (row < D && k < D) ? src[static_cast<int64_t>(row) * D + k] : 0.f;
  }
}

template <int R>
__device__ __forceinline__ void fma_step(float (&acc)[R][4], const float* __restrict__ Mk, const float4 (&x)[4]) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float4 m = *reinterpret_cast<const float4*>(Mk + r * kKStep);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      acc[r][u] = fmaf(m.x, x[u].x, acc[r][u]);
      acc[r][u] = fmaf(m.y, x[u].y, acc[r][u]);
      acc[r][u] = fmaf(m.z, x[u].z, acc[r][u]);
      acc[r][u] = fmaf(m.w, x[u].w, acc[r][u]);
    }
  }
}

// red[w][bl][r] = warp w's share of sum_k M[r, k] v[b0 + bl, k] for the batch tile [b0, b0 + 32). M: the
// shared slice (load_slice layout); v: global [B][Dp], zero beyond D. Rows b0 + bl >= B compute a copy of
// row B-1 (so no load is predicated on B) and must be ignored by the caller. Every warp writes its slots
// (zeros when it has no k step), so the caller sums all kWarps after __syncthreads().
template <int R>
__device__ __forceinline__ void block_matvec(const float* __restrict__ M, int Dp, const float* __restrict__ v, int B,
                                             int b0, float* __restrict__ red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kq = lane & 3, bi = lane >> 2;
  const int nks = Dp / kKStep;
  float acc[R][4];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int u = 0; u < 4; ++u) acc[r][u] = 0.f;
  const float* vp[4];  // this lane's 4 consecutive k of its batch rows bi + 8u, at k step 0
#pragma unroll
  for (int u = 0; u < 4; ++u) vp[u] = v + (static_cast<int64_t>(min(b0 + bi + 8 * u, B - 1)) * Dp + kq * 4);
  const float* Mq = M + kq * 4;
  constexpr int kStride = kWarps * kKStep;  // elements between a warp's consecutive k steps
  // Two register buffers in ping-pong: the loads of the next k step are in flight while this one is used.
  float4 xa[4], xb[4];
  int ks = warp, off = warp * kKStep;
  if (ks < nks) {
#pragma unroll
    for (int u = 0; u < 4; ++u) xa[u] = load4_cg(vp[u] + off);
  }
  while (ks < nks) {
    if (ks + kWarps < nks) {
#pragma unroll
      for (int u = 0; u < 4; ++u) xb[u] = load4_cg(vp[u] + off + kStride);
    }
    fma_step<R>(acc, Mq + ks * (R * kKStep), xa);
    ks += kWarps, off += kStride;
    if (ks >= nks) break;
    if (ks + kWarps < nks) {
#pragma unroll
      for (int u = 0; u < 4; ++u) xa[u] = load4_cg(vp[u] + off + kStride);
    }
    fma_step<R>(acc, Mq + ks * (R * kKStep), xb);
    ks += kWarps, off += kStride;
  }
  // Sum over the 4 kq lanes by halving. Round 1 (lane ^ 1): kq bit 0 clear keeps u = 0, 1, set keeps u = 2, 3,
  // each sending the pair it drops. Round 2 (lane ^ 2): bit 1 clear keeps the first of its pair, set the second.
  constexpr unsigned kAll = 0xffffffffu;
  const bool hi1 = (kq & 1) != 0, hi2 = (kq & 2) != 0;
  float s1[R][2];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float send = hi1 ? acc[r][i] : acc[r][2 + i];
      const float keep = hi1 ? acc[r][2 + i] : acc[r][i];
      s1[r][i] = keep + __shfl_xor_sync(kAll, send, 1);
    }
  const int u_mine = (hi1 ? 2 : 0) + (hi2 ? 1 : 0);
  float* dst = red + (warp * kBTile + bi + 8 * u_mine) * red_pitch(R);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float send = hi2 ? s1[r][0] : s1[r][1];
    const float keep = hi2 ? s1[r][1] : s1[r][0];
    dst[r] = keep + __shfl_xor_sync(kAll, send, 2);
  }
}

// Sum of the kWarps partial sums of output (batch row bl of the tile, row r).
template <int R>
__device__ __forceinline__ float reduce_warps(const float* __restrict__ red, int bl, int r) {
  float s = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) s += red[(w * kBTile + bl) * red_pitch(R) + r];
  return s;
}

template <int R>
struct FmaProduct {
  using scalar_t = float;
  static constexpr int kRows = R;
  static constexpr int kBTile = dense::kBTile;
  static bool fits(int64_t) { return true; }
  static size_t smem_bytes(int64_t Dp) {
    return sizeof(float) * (static_cast<size_t>(R) * Dp + static_cast<size_t>(kWarps) * kBTile * red_pitch(R));
  }
  float* Ms;  // the slice, load_slice layout
  float* red;
  int Dp;
  // smem: the kernel's dynamic shared memory; M: fp32 [D,D]; rows row0 .. row0 + R - 1 are this block's.
  __device__ FmaProduct(void* smem, const float* __restrict__ M, int row0, int D, int Dp_)
      : Ms(static_cast<float*>(smem)), red(Ms + R * Dp_), Dp(Dp_) {
    load_slice<R>(Ms, M, row0, D, Dp);
  }
  __device__ float* end() const { return red + kWarps * kBTile * red_pitch(R); }
  // Partial sums for batch rows b0 .. min(b0 + 32, Bend) - 1 of v [B][Dp]; result() is valid after a
  // __syncthreads().
  __device__ void tile(const float* __restrict__ v, int Bend, int b0) { block_matvec<R>(Ms, Dp, v, Bend, b0, red); }
  __device__ float result(int bl, int r) const { return reduce_warps<R>(red, bl, r); }
};

// D = A B + D for one m16n8k16 tile: A 16 x 16 bf16 (row-major fragments), B 16 x 8 bf16 (k-major), D fp32.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// MT row tiles of 16 rows; each warp holds KT of its k-tiles in registers and KS more in shared memory (as the
// same A fragments, read back once per step: 512 bytes per warp, row tile and k-tile, conflict-free).
template <int MT, int KT, int KS>
struct MmaProduct {
  using scalar_t = c10::BFloat16;
  static constexpr int kRows = 16 * MT;
  // Batch rows per tile: the epilogue has one thread per (batch row, row), in whole n-tiles of 8 rows.
  static constexpr int kBTile = kThreads / kRows / 8 * 8;
  static_assert(kBTile >= 8, "the epilogue needs one thread per (batch row, row) for 8 batch rows");
  static constexpr int kNt = kBTile / 8;           // n-tiles of 8 batch rows
  // 16-byte loads in flight per thread when staging a tile of v: 8 rows (MT >= 3) of up to 1536 columns are at
  // most 3 per thread, and 4 buffers leave the registers to the fragments.
  static constexpr int kStage = kBTile >= 16 ? 8 : 4;
  // red[warp][r][b] with row pitch kBTile + 9 (odd: the epilogue's consecutive threads, consecutive r, spread
  // over the banks).
  static constexpr int kRedPitch = kBTile + 9;
  static constexpr size_t kSharedFrags = static_cast<size_t>(KS) * MT * kWarps * 32;  // uint4 A fragments
  // The shared A fragments, then the staged tile of v with row pitch Dp + 8 elements (Dp + 8 = 8 (mod 16) puts
  // the 8 batch rows of an MMA B-fragment load on disjoint groups of 4 banks), then red.
  static size_t smem_bytes(int64_t Dp) {
    return sizeof(uint4) * kSharedFrags + sizeof(c10::BFloat16) * kBTile * static_cast<size_t>(Dp + 8) +
           sizeof(float) * static_cast<size_t>(kWarps) * kRows * kRedPitch;
  }
  // Whether a row of Dp columns fits the fragments (at most KT + KS k-tiles per warp).
  static bool fits(int64_t Dp) { return Dp / kKStep <= kWarps * (KT + KS); }
  uint32_t a[MT][KT][4];  // A fragments of this warp's first KT k-tiles (two bf16 each), per row tile
  uint4* as;              // [KS][MT][kWarps][32]: the A fragments of k-tiles KT .. KT + KS - 1 of each warp
  c10::BFloat16* vs;      // [kBTile][P]
  float* red;
  int Dp, P, nkt;

  static __device__ __forceinline__ uint32_t pack(const c10::BFloat16* M, int D, int row, int col) {
    const auto bits = [&](int c) -> uint32_t {
      return row < D && c < D ? static_cast<uint32_t>(M[static_cast<int64_t>(row) * D + c].x) : 0u;
    };
    return bits(col) | (bits(col + 1) << 16);
  }
  // The A fragment of lane `lane` for the 16 x 16 tile at rows rlo.. (its rows rlo + lane / 4 and + 8), k-tile kt.
  static __device__ __forceinline__ uint4 fragment(const c10::BFloat16* M, int D, int rlo, int kt, int lane) {
    const int k = kt * kKStep + 2 * (lane & 3), row = rlo + (lane >> 2);
    return make_uint4(pack(M, D, row, k), pack(M, D, row + 8, k), pack(M, D, row, k + 8), pack(M, D, row + 8, k + 8));
  }

  // smem: the kernel's dynamic shared memory; M: bf16 [D,D]; rows row0 .. row0 + kRows - 1 are this block's.
  __device__ MmaProduct(void* smem, const c10::BFloat16* __restrict__ M, int row0, int D, int Dp_)
      : as(static_cast<uint4*>(smem)), vs(reinterpret_cast<c10::BFloat16*>(as + kSharedFrags)),
        red(reinterpret_cast<float*>(vs + kBTile * (Dp_ + 8))), Dp(Dp_), P(Dp_ + 8), nkt(Dp_ / kKStep) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
      for (int i = 0; i < KT; ++i) {
        const uint4 f = fragment(M, D, row0 + 16 * m, warp + kWarps * i, lane);
        a[m][i][0] = f.x, a[m][i][1] = f.y, a[m][i][2] = f.z, a[m][i][3] = f.w;
      }
#pragma unroll
      for (int s = 0; s < KS; ++s)
        as[((s * MT + m) * kWarps + warp) * 32 + lane] = fragment(M, D, row0 + 16 * m, warp + kWarps * (KT + s), lane);
    }
    // Rows of a partial tile are never staged: start them at zero (finite; their sums are ignored).
    for (int i = threadIdx.x; i < kBTile * P; i += kThreads) vs[i] = c10::BFloat16(0.f);
  }
  __device__ float* end() const { return red + kWarps * kRows * kRedPitch; }

  // The B fragments of k-tile kt for the n-tiles of the staged v that hold rows.
  __device__ __forceinline__ void b_fragments(uint32_t (&bf)[kNt][2], const c10::BFloat16* vrow, int kt,
                                              int nts) const {
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt) {
      if (nt < nts) {
        const uint32_t* bp = reinterpret_cast<const uint32_t*>(vrow + nt * 8 * P + kt * kKStep);
        bf[nt][0] = bp[0], bf[nt][1] = bp[4];
      }
    }
  }
  static __device__ __forceinline__ void mma_row_tile(float (&c)[kNt][4], const uint32_t (&af)[4],
                                                      const uint32_t (&bf)[kNt][2], int nts) {
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt)
      if (nt < nts) mma_bf16(c[nt], af, bf[nt][0], bf[nt][1]);
  }

  // Partial sums for batch rows b0 .. min(b0 + kBTile, Bend) - 1 of v [B][Dp]; result() is valid after a
  // __syncthreads().
  __device__ void tile(const c10::BFloat16* __restrict__ v, int Bend, int b0) {
    // Stage the tile's rows of v: kStage loads of 16 bytes in flight per thread.
    const int n16 = Dp / 8, rows = min(kBTile, Bend - b0), total = rows * n16;
    const uint4* src = reinterpret_cast<const uint4*>(v + static_cast<int64_t>(b0) * Dp);
    for (int base = 0; base < total; base += kStage * kThreads) {
      uint4 buf[kStage];
#pragma unroll
      for (int j = 0; j < kStage; ++j) {
        const int i = base + j * kThreads + static_cast<int>(threadIdx.x);
        if (i < total) buf[j] = __ldcg(src + i);
      }
#pragma unroll
      for (int j = 0; j < kStage; ++j) {
        const int i = base + j * kThreads + static_cast<int>(threadIdx.x);
        if (i < total) {
          const int n = i / n16, c = i - n * n16;
          *reinterpret_cast<uint4*>(vs + n * P + c * 8) = buf[j];
        }
      }
    }
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nts = (rows + 7) / 8;  // n-tiles holding rows of this tile
    float c[MT][kNt][4];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
        for (int u = 0; u < 4; ++u) c[m][nt][u] = 0.f;
    const c10::BFloat16* vrow = vs + (lane >> 2) * P + 2 * (lane & 3);
    uint32_t bf[kNt][2];
#pragma unroll
    for (int i = 0; i < KT; ++i) {
      const int kt = warp + kWarps * i;
      if (kt < nkt) {
        b_fragments(bf, vrow, kt, nts);
#pragma unroll
        for (int m = 0; m < MT; ++m) mma_row_tile(c[m], a[m][i], bf, nts);
      }
    }
#pragma unroll
    for (int s = 0; s < KS; ++s) {
      const int kt = warp + kWarps * (KT + s);
      if (kt < nkt) {
        b_fragments(bf, vrow, kt, nts);
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          const uint4 f = as[((s * MT + m) * kWarps + warp) * 32 + lane];
          const uint32_t af[4] = {f.x, f.y, f.z, f.w};
          mma_row_tile(c[m], af, bf, nts);
        }
      }
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      float* d = red + (warp * kRows + 16 * m + (lane >> 2)) * kRedPitch + 2 * (lane & 3);
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) {
        d[nt * 8] = c[m][nt][0];
        d[nt * 8 + 1] = c[m][nt][1];
        d[8 * kRedPitch + nt * 8] = c[m][nt][2];
        d[8 * kRedPitch + nt * 8 + 1] = c[m][nt][3];
      }
    }
  }
  __device__ float result(int bl, int r) const {
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += red[(w * kRows + r) * kRedPitch + bl];
    return s;
  }
};
// The bf16 products the launcher chooses from, in order (ties keep the earlier): 16 rows (D <= 2304), 32 rows
// (D <= 1536), 48 rows (D <= 1280 from registers, D <= 1536 with a sixth k-tile per warp in shared memory). Register
// fragments beyond 60 per thread spill (64 rows with 80 registers of fragments: 5.27 against 4.42 ms at D = 1280),
// and 64 rows with 3 k-tiles per warp in registers and the rest in shared memory (6 groups at D = 1280, 5 at 1536)
// was slower than 48 rows (4 groups): 4.01 against 3.67 ms at D = 1280, 4.41 against 3.91 at D = 1536.
template <class... Prods>
struct ProductList {};
using MmaProducts = ProductList<MmaProduct<1, 9, 0>, MmaProduct<2, 6, 0>, MmaProduct<3, 5, 0>, MmaProduct<3, 5, 1>>;
// fp32 inputs: R from {2, 4, 8, 10, 12, 16}, smallest first.
using FmaProducts = ProductList<FmaProduct<2>, FmaProduct<4>, FmaProduct<8>, FmaProduct<10>, FmaProduct<12>,
                                FmaProduct<16>>;
template <typename scalar_t>
using Products = std::conditional_t<std::is_same_v<scalar_t, float>, FmaProducts, MmaProducts>;

// Barrier of one batch group (its blocks only), in two halves so that a block can do work that nobody in the
// group waits for (stores of outputs, loads for the next step) between them. group_arrive: once every thread of
// the block is past its writes for the group (the __syncthreads), thread 0 adds one to the group's counter with
// release semantics, which publishes those writes at GPU scope. group_wait: thread 0 spins with acquire loads
// until the counter reaches `target` (the group's block count times the number of barriers so far); the
// __syncthreads then orders the whole block's later reads after it.
__device__ __forceinline__ void group_arrive(unsigned* counter) {
  __syncthreads();
  if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
}

__device__ __forceinline__ void group_wait(const unsigned* counter, unsigned target) {
  if (threadIdx.x == 0) {
    unsigned seen;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
    } while (seen < target);
  }
  __syncthreads();
}

// The batch slice of group `grp`: rows [beg, end) of B, with groups of ceil(B / G) rows.
struct BatchSlice {
  int beg, end;
  __device__ BatchSlice(int B, int groups, int grp) {
    const int per = (B + groups - 1) / groups;
    beg = min(B, grp * per), end = min(B, beg + per);
  }
};

// ELMAN_DENSE_ROWS=R forces the rows per block (fp32: one of 2, 4, 8, 10, 12, 16; bf16: 16, 32 or 48), for
// benchmarking the trade-offs (fewer blocks per group: more batch groups and less L2 traffic for the per-step
// broadcast; more blocks: less work per SM) and for the tests that run every product. Read at every launch.
inline int forced_rows() {
  const char* env = std::getenv("ELMAN_DENSE_ROWS");
  return env ? std::atoi(env) : 0;
}

// A launch choice: the kernel of one product, its rows per block, how many batch groups can be co-resident, and
// its dynamic shared memory.
struct Pick {
  const void* kernel = nullptr;
  int rows = 0, groups = 0;
  size_t smem = 0;
};

// Considers `kernel` with R rows per block: the number of batch groups of ceil(D / R) blocks of kThreads (with
// `smem` bytes each) that are co-resident on this device, at most B; replaces `best` when that is more groups
// (so ties keep the earlier, smaller R). Skipped when the slice does not fit in shared memory or
// ELMAN_DENSE_ROWS asks for another R.
inline void consider(Pick& best, const void* kernel, int R, int64_t D, int64_t B, size_t smem) {
  if (forced_rows() > 0 && R != forced_rows()) return;
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t per_group = (D + R - 1) / R;
  // 512-thread blocks of >= 64 registers: at most 2 per SM; skip the occupancy query for hopeless R.
  if (per_group > 2 * static_cast<int64_t>(prop->multiProcessorCount)) return;
  if (smem > prop->sharedMemPerBlockOptin) return;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
  int64_t groups = static_cast<int64_t>(per_sm) * prop->multiProcessorCount / per_group;
  if (groups > B) groups = B;
  if (groups > best.groups) best = Pick{kernel, R, static_cast<int>(groups), smem};
}

// Launches the pick cooperatively (all blocks co-resident, which the group barriers need) on its groups of
// ceil(D / R) blocks, after evening out the groups' batch slices (ceil(B / G) rows each, no empty group).
// `groups` and `bar` are the kernel parameters' fields: the group count and G barrier counters (zeroed here).
// `like`: any tensor on the launch's device.
template <class Params>
void launch_groups(const Pick& pick, Params& p, const at::Tensor& like, cudaStream_t stream) {
  const int per = (p.B + pick.groups - 1) / pick.groups;
  p.groups = (p.B + per - 1) / per;
  // Freed when this returns: the caching allocator reuses it only for work queued after the kernel on this stream.
  auto bar = at::zeros({p.groups}, like.options().dtype(at::kInt));
  p.bar = static_cast<unsigned*>(bar.data_ptr());
  const int64_t grid = static_cast<int64_t>(p.groups) * ((p.D + pick.rows - 1) / pick.rows);
  void* args[] = {&p};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(pick.kernel, dim3(static_cast<unsigned>(grid)), dim3(kThreads), args,
                                             pick.smem, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The error when no R fits: the largest D this device can run (fp32 slice in shared memory, one block per SM).
[[noreturn]] inline void fail_too_large(const char* name, int64_t B, int64_t D) {
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  TORCH_CHECK(prop->cooperativeLaunch, name, ": this device does not support cooperative launches");
  TORCH_CHECK(false, name, ": D=", D, " with B=", B,
              " does not fit the persistent kernel on this GPU: each of at most ",
              prop->multiProcessorCount, " co-resident blocks owns up to ", kMaxRows,
              " rows of W (fp32 inputs: in shared memory, ", prop->sharedMemPerBlockOptin,
              " bytes per block), so D can be at most about ", kMaxRows * prop->multiProcessorCount,
              " (less for large B); use the reference implementation for this size",
              forced_rows() > 0 ? " (ELMAN_DENSE_ROWS is set and restricts the choice)" : "");
  __builtin_unreachable();
}

}  // namespace elman::cuda::dense
