// Device and host pieces shared by the chunk preparation kernels (gated_delta_prep_fwd.cu, gated_delta_prep_bwd.cu):
// strided float32/bfloat16 input rows, the chunk's decays (segment sums), the unit lower-triangular inverse, the
// row-pass thread layout, and the argument checks. The products are gated_delta.cuh's `mm` (kThreads = 512).
//
// Tiles in shared memory: operand tiles (Op = float or bf16) [L][Geo<Op>::ldK] and [L][Geo<Op>::ldL]; fp32 tiles
// [L][ldKf] and [L][ldLf]. For Op = float both kinds have the same leading dimensions (132, 68).
//
// Row passes: thread tid owns row r = tid / 8 of a [64, cols] tile and its columns part + 8 m (part = tid % 8), so
// the 8 threads of a row are 8 consecutive lanes of one warp and sum8 adds their partial sums in a fixed order.
#pragma once
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/gated_delta/gated_delta.cuh"

namespace elman::cuda::gdn {

static_assert(kThreads == 8 * kL, "the row passes and the inverse give every row (column) of a chunk 8 threads");

constexpr int ldLf = kL + 4;  // fp32 [L, L] tiles
constexpr int ldKf = kK + 4;  // fp32 [L, K] tiles
constexpr int kVT = 64;       // V columns per tile of the V loops

// An input [B,T,H,D] read through its strides, float32 or bfloat16. vec: rows are contiguous and every run of 8
// elements that starts at a multiple of 8 is 16-byte aligned (as the layer's conv writes q, k and v), so the bulk
// loads read 8 elements a thread (load8).
struct In {
  const void* p;
  int64_t sb, st, sh, sd;
  bool bf16, vec;
};
inline In in_view(const at::Tensor& x) {
  const int64_t e = x.element_size();
  const bool vec = x.stride(3) == 1 && (x.stride(0) * e) % 16 == 0 && (x.stride(1) * e) % 16 == 0 &&
                   (x.stride(2) * e) % 16 == 0 && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
  return In{x.data_ptr(), x.stride(0), x.stride(1), x.stride(2), x.stride(3), x.scalar_type() == at::kBFloat16, vec};
}
// out[0..7] = the 8 elements from `off` (a multiple of 8 along a contiguous row of a vec input).
__device__ __forceinline__ void load8(const In& x, int64_t off, float* out) {
  if (x.bf16) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(x.p) + off));
    const __nv_bfloat16* e = reinterpret_cast<const __nv_bfloat16*>(&u);
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = __bfloat162float(e[j]);
  } else {
    const float4* f = reinterpret_cast<const float4*>(static_cast<const float*>(x.p) + off);
    const float4 a = __ldg(f), c = __ldg(f + 1);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = c.x, out[5] = c.y, out[6] = c.z, out[7] = c.w;
  }
}
// dst[0..7] = Op(v[j] * s) in one (bf16) or two (fp32) 16-byte stores; dst 16-byte aligned.
template <typename Op>
__device__ __forceinline__ void store8(Op* dst, const float* v, float s) {
  __align__(16) Op o[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) o[j] = from_f<Op>(v[j] * s);
  const uint4* src = reinterpret_cast<const uint4*>(o);
  uint4* d = reinterpret_cast<uint4*>(dst);
#pragma unroll
  for (int j = 0; j < static_cast<int>(sizeof(o) / 16); ++j) d[j] = src[j];
}
__device__ __forceinline__ float ld_in(const In& x, int64_t off) {
  return x.bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(x.p)[off]) : static_cast<const float*>(x.p)[off];
}
__device__ __forceinline__ int64_t row_of(const In& x, int b, int t, int h) {
  return b * x.sb + t * x.st + h * x.sh;
}
// Element `off` of a contiguous gradient in its input's dtype.
__device__ __forceinline__ void st_out(void* p, bool bf16, int64_t off, float x) {
  if (bf16) static_cast<__nv_bfloat16*>(p)[off] = __float2bfloat16(x);
  else static_cast<float*>(p)[off] = x;
}

// dst[i][d] = Op(x[b, t0 + i, h, d0 + d] * scale[i]) for the chunk's kL rows and d < D; the padded rows i >= n
// are zero; scale may be null (1).
template <typename Op, int D>
__device__ __forceinline__ void load_rows(Op* dst, int ld, const In& x, int b, int t0, int h, int n, int d0,
                                          const float* scale) {
  if (x.vec) {  // 8 elements a thread (d0 is a multiple of 8; ld keeps dst's rows 16-byte aligned)
    for (int idx = threadIdx.x; idx < kL * D / 8; idx += kThreads) {
      const int i = idx / (D / 8), d = (idx - i * (D / 8)) * 8;
      float val[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      if (i < n) load8(x, row_of(x, b, t0 + i, h) + d0 + d, val);
      store8(dst + i * ld + d, val, scale ? scale[i] : 1.f);
    }
    return;
  }
  for (int idx = threadIdx.x; idx < kL * D; idx += kThreads) {
    const int i = idx / D, d = idx - i * D;
    float val = 0.f;
    if (i < n) val = ld_in(x, row_of(x, b, t0 + i, h) + (d0 + d) * x.sd);
    if (scale) val *= scale[i];
    dst[i * ld + d] = from_f<Op>(val);
  }
}

// GatedDeltaNet's L2 norms of q and k, fused (qk_l2norm): q^ = c_q q / sqrt(sum_d q_d^2 + kL2Eps) with c_q = 1/sqrt(K)
// (q is also scaled), k^ = k / sqrt(sum_d k_d^2 + kL2Eps).
constexpr float kL2Eps = 1e-6f;
constexpr float kQScale = 0.08838834764831845f;  // 1 / sqrt(kK)

// Sum over the 8 lanes of a row-pass row (lanes 8 m .. 8 m + 7); every lane gets the same value.
__device__ __forceinline__ float sum8(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  x += __shfl_xor_sync(0xffffffffu, x, 2);
  x += __shfl_xor_sync(0xffffffffu, x, 4);
  return x;
}

// The factors of the fused L2 norms per row of the chunk: rq[i] = c_q / sqrt(|q_i|^2 + kL2Eps), rk[i] =
// 1 / sqrt(|k_i|^2 + kL2Eps) (so q^_i = rq[i] q_i, k^_i = rk[i] k_i), 1 on padded rows (i >= n, q = k = 0) and
// everywhere when !l2. Row-pass layout, sums in fp32 from q, k read exactly; the caller syncs before reading them.
__device__ __forceinline__ void l2_factors(bool l2, const In& q, const In& k, int b, int t0, int h, int n, float* rq,
                                           float* rk) {
  const int r = threadIdx.x >> 3, part = threadIdx.x & 7;
  const bool on = l2 && r < n;
  float sq = 0.f, sk = 0.f;
  if (on) {
    const int64_t qrow = row_of(q, b, t0 + r, h), krow = row_of(k, b, t0 + r, h);
#pragma unroll 4
    for (int m = 0; m < kK / 8; ++m) {
      const int d = part + 8 * m;
      const float qv = ld_in(q, qrow + d * q.sd), kv = ld_in(k, krow + d * k.sd);
      sq = fmaf(qv, qv, sq), sk = fmaf(kv, kv, sk);
    }
  }
  sq = sum8(sq), sk = sum8(sk);
  if (part == 0) {
    rq[r] = on ? kQScale * rsqrtf(sq + kL2Eps) : 1.f;
    rk[r] = on ? rsqrtf(sk + kL2Eps) : 1.f;
  }
}

// The chunk's decays (as ops::gated_delta_chunk_prep forms them), from g, beta at element `off` of row t0 (stride
// `step` = H between steps), n valid rows: gs, bs = g, beta (0 on the padded rows); gam[i] = exp(G_i) with G the
// cumulative sum; wsc[i] = beta_i exp(G_i); D [kL][ldLf] with D[i][j] = exp(seg[i][j]), seg[i][j] = sum_{j<k<=i} g_k
// summed down column j in order (1 on the diagonal), exactly 0 above the diagonal; lam[j] = exp(seg[L-1][j]).
// Ends with __syncthreads().
__device__ __forceinline__ void chunk_decays(const float* __restrict__ g, const float* __restrict__ beta, int64_t off,
                                             int64_t step, int n, float* gs, float* bs, float* gam, float* wsc,
                                             float* lam, float* D) {
  const int tid = threadIdx.x;
  if (tid < kL) {
    gs[tid] = tid < n ? g[off + tid * step] : 0.f;
    bs[tid] = tid < n ? beta[off + tid * step] : 0.f;
  }
  __syncthreads();
  if (tid < kL) {
    const int j = tid;
    float s = 0.f;
    for (int i = 0; i < kL; ++i) {
      if (i > j) s += gs[i];
      D[i * ldLf + j] = i < j ? 0.f : expf(s);
    }
    lam[j] = expf(s);
  } else if (tid == kL) {
    float s = 0.f;
    for (int i = 0; i < kL; ++i) {
      s += gs[i];
      gam[i] = expf(s);
      wsc[i] = bs[i] * gam[i];
    }
  }
  __syncthreads();
}

// T = (I + A)^{-1} for A [kL][ldLf] fp32, strictly lower triangular (zero on and above the diagonal). Column c of
// T solves (I + A) x = e_c by forward substitution in fp32: 8 lanes per column (4 columns per warp), lane `part`
// holding x_j for the rows j = part + 8 m in registers, so the 64 steps need no block-wide barrier. Writes T to
// Tf [kL][ldLf] (fp32) and, for bf16, its rounded copy to Top [kL][ldo]. The caller syncs before reading them.
template <typename Op>
__device__ __forceinline__ void unit_lower_inverse(const float* A, float* Tf, Op* Top, int ldo) {
  const int lane = threadIdx.x & 31, c = (threadIdx.x >> 5) * 4 + (lane >> 3), part = lane & 7;
  float x[kL / 8];
#pragma unroll
  for (int m = 0; m < kL / 8; ++m) x[m] = 0.f;
#pragma unroll
  for (int i = 0; i < kL; ++i) {
    float s = 0.f;
#pragma unroll
    for (int m = 0; m < kL / 8; ++m)
      if (part + 8 * m < i) s = fmaf(A[i * ldLf + part + 8 * m], x[m], s);
    s = sum8(s);
    if (part == (i & 7)) x[i >> 3] = (i == c ? 1.f : 0.f) - s;
  }
#pragma unroll
  for (int m = 0; m < kL / 8; ++m) {
    const int j = part + 8 * m;
    Tf[j * ldLf + c] = x[m];
    if constexpr (std::is_same<Op, __nv_bfloat16>::value) Top[j * ldo + c] = from_f<Op>(x[m]);
  }
}

// Host: checks q, k [B,T,H,128], v [B,T,H,V] (V a multiple of 64; float32 or bfloat16, CUDA, any strides) and
// g, beta [B,T,H] (float32, contiguous) for launcher `fn`.
inline void check_prep_inputs(const char* fn, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& g, const at::Tensor& beta) {
  for (const auto* t : {&q, &k, &v}) {
    TORCH_CHECK(t->is_cuda() && t->dim() == 4, fn, ": q, k, v must be 4-d CUDA tensors");
    TORCH_CHECK(t->scalar_type() == at::kFloat || t->scalar_type() == at::kBFloat16, fn,
                ": q, k, v must be float32 or bfloat16, got ", t->scalar_type());
  }
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2);
  TORCH_CHECK(q.size(3) == kK && k.sizes() == q.sizes(), fn, ": q and k must be [B,T,H,", kK, "], got ", q.sizes(),
              " and ", k.sizes());
  TORCH_CHECK(v.size(0) == B && v.size(1) == T && v.size(2) == H && v.size(3) > 0 && v.size(3) % kVT == 0, fn,
              ": v must be [", B, ",", T, ",", H, ",V] with V a multiple of ", kVT, ", got ", v.sizes());
  for (const auto* t : {&g, &beta})
    TORCH_CHECK(t->is_cuda() && t->is_contiguous() && t->scalar_type() == at::kFloat &&
                    t->sizes() == at::IntArrayRef({B, T, H}),
                fn, ": g and beta must be contiguous float32 CUDA tensors [", B, ",", T, ",", H, "]");
  TORCH_CHECK(B * ((T + kL - 1) / kL) * H < (int64_t(1) << 31), fn, ": too many chunks");
}

}  // namespace elman::cuda::gdn
