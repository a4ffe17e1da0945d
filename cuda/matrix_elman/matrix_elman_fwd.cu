/* Matrix-state Elman cells E70-E73, forward: one launch walks all T (recurrences in ops/matrix_elman/reference.h).
 *
 * Grid: B * ceil(n / 8) blocks of 8 warps; warp w of block (b, blk) owns state row i = 8 blk + w of batch b, lane l
 * its columns l, l + 32, .. in fp32 registers (layout and staging in matrix_elman.cuh). Per segment of K steps:
 * the row at the segment start goes to ckpt (fp32, NP columns), the block stages the segment's inputs (loaded
 * into registers during the previous segment; one __syncthreads), issues the next segment's loads, every warp
 * walks the K steps on its own row with no block-wide sync (per step and lane: J FMAs + 5 shuffles for r (E71,
 * E72), J FMAs or tanh for the update, J FMAs + 5 shuffles for u = S q), then after one more __syncthreads the
 * block writes y = u^2 sigmoid(u) for its rows (runs of 8 consecutive outputs).
 * Saved for backward (by ops/matrix_elman): ckpt.
 * Numerics: fp32 state and arithmetic, precise expf/tanhf; proj and y in float32 or bfloat16.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/matrix_elman/matrix_elman.cuh"
#include "cuda/matrix_elman/matrix_elman.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
using namespace matrix;

template <class L, int C, typename scalar_t>
__global__ void __launch_bounds__(kThreads) matrix_elman_fwd_kernel(const Params<scalar_t> p) {
  constexpr int NP = L::NP, J = L::J, K = L::K;
  __shared__ __align__(16) Stage<L, C> st;
  __shared__ float u_s[K][kRows];
  const int b = blockIdx.x / p.nblk, i0 = (blockIdx.x - b * p.nblk) * kRows, n = p.n;
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32, row = i0 + w;
  const bool active = row < n;
  const RowParams rp = load_row_params<C>(p.w, n, row);
  const int64_t sbase = (static_cast<int64_t>(b) * n + row) * n;  // S[b,row,:]
  float S[J];
#pragma unroll
  for (int e = 0; e < J; ++e) S[e] = active && lane + 32 * e < n ? p.S0[sbase + lane + 32 * e] : 0.f;

  Prefetch<L, C, scalar_t> pf;
  pf.load(p, b, i0, 0, min(K, p.T));
  for (int seg = 0; seg < p.nseg; ++seg) {
    const int t0 = seg * K, len = min(K, p.T - t0);
    if (active) {
      float* ck = p.ckpt + ((static_cast<int64_t>(b) * n + row) * p.nseg + seg) * NP + lane;
#pragma unroll
      for (int e = 0; e < J; ++e) ck[32 * e] = S[e];
    }
    pf.store(p, i0, st);  // the previous segment's steps are done with st (__syncthreads after them)
    __syncthreads();
    if (seg + 1 < p.nseg) pf.load(p, b, i0, t0 + K, min(K, p.T - t0 - K));  // in flight during the steps
#pragma unroll 4  // lets the next steps' shared-memory loads issue ahead of this step's shuffle chain
    for (int s = 0; s < len; ++s) {
      const RowStep o = step_forward<L, C>(S, st, s, w, lane, rp);
      if (lane == 0) u_s[s][w] = o.u;
    }
    __syncthreads();
    // u_s is next written after the next segment's __syncthreads, so this pass needs no barrier after it.
    for (int idx = threadIdx.x; idx < len * kRows; idx += kThreads) {
      const int s = idx / kRows, r = idx - s * kRows;
      if (i0 + r < n) {
        const float u = u_s[s][r];
        p.y[(static_cast<int64_t>(b) * p.T + t0 + s) * n + i0 + r] = static_cast<scalar_t>(u * u * sigmoid(u));
      }
    }
  }
  if (active) {
#pragma unroll
    for (int e = 0; e < J; ++e)
      if (lane + 32 * e < n) p.S_T[sbase + lane + 32 * e] = S[e];
  }
}

}  // namespace

std::vector<at::Tensor> matrix_elman_fwd(int cell, const at::Tensor& proj_in, const at::Tensor& w_in,
                                         const at::Tensor& S0_in, int64_t n) {
  TORCH_CHECK(proj_in.dim() == 3, "matrix_elman_fwd: proj must be [B,T,P*n], got ", proj_in.sizes());
  TORCH_CHECK(proj_in.scalar_type() == at::kFloat || proj_in.scalar_type() == at::kBFloat16,
              "matrix_elman: the CUDA kernel takes float32 or bfloat16 proj, got ", proj_in.scalar_type(),
              "; use the reference implementation for other dtypes");
  const c10::cuda::CUDAGuard guard(proj_in.device());
  auto proj = proj_in.contiguous();
  const int64_t B = proj.size(0), T = proj.size(1);
  auto f32 = proj.options().dtype(at::kFloat);
  auto w = w_in.to(f32).contiguous();
  auto S0 = S0_in.to(f32).contiguous();
  TORCH_CHECK(S0.sizes() == at::IntArrayRef({B, n, n}), "matrix_elman_fwd: S0 must be [B,n,n], got ", S0.sizes());
  TORCH_CHECK(B * n < (int64_t(1) << 31) && T < (int64_t(1) << 30) && B * T * 4 * n < (int64_t(1) << 62),
              "matrix_elman_fwd: input too large ", proj.sizes());
  ELMAN_CHECK_CUDA_TENSOR(proj);
  ELMAN_CHECK_CUDA_TENSOR(S0);
  ELMAN_CHECK_CUDA_TENSOR(w);
  int64_t NP, K, nseg;
  segment_geometry(n, T, NP, K, nseg);
  const int64_t nblk = (n + kRows - 1) / kRows;

  auto y = ops::empty_output({B, T, n}, proj.options());
  auto S_T = ops::empty_output({B, n, n}, f32);
  auto ckpt = ops::empty_output({B, n, nseg, NP}, f32);
  auto run = [&](auto tag) {
    using scalar_t = decltype(tag);
    Params<scalar_t> p{};
    p.proj = proj.data_ptr<scalar_t>();
    p.w = w.data_ptr<float>();
    p.S0 = S0.data_ptr<float>();
    p.ckpt = ckpt.data_ptr<float>();
    p.y = y.data_ptr<scalar_t>();
    p.S_T = S_T.data_ptr<float>();
    p.B = int(B), p.T = int(T), p.n = int(n), p.nblk = int(nblk), p.nseg = int(nseg);
    dispatch_cell(cell, [&](auto c) {
      constexpr int C = decltype(c)::value;
      TORCH_CHECK(proj.size(2) == CellTraits<C>::P * n && w.sizes() == at::IntArrayRef({CellTraits<C>::Pw, n}),
                  "matrix_elman_fwd: proj must be [B,T,", CellTraits<C>::P * n, "] and w [", CellTraits<C>::Pw, ",",
                  n, "], got ", proj.sizes(), " and ", w.sizes());
      dispatch_layout(n, [&](auto layout) {
        using L = decltype(layout);
        matrix_elman_fwd_kernel<L, C, scalar_t>
            <<<static_cast<unsigned>(B * nblk), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(p);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  };
  if (proj.scalar_type() == at::kBFloat16) run(c10::BFloat16{});
  else run(float{});
  return {y, S_T, ckpt};
}

}  // namespace elman::cuda
