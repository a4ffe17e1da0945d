/* Fused residual add + RMSNorm (ops/rms_norm/rms_norm.h).
 * One warp per row (rows strided over the grid), fp32 math:
 *   forward: pass 1 reads residual and y, writes r (rounded to residual's dtype) and sums r^2 over the row;
 *            pass 2 re-reads r (from L1/L2) and writes n = r * rstd * w; rstd per row is kept for the backward.
 *   backward: dr = gr + rstd * w * gn - r * rstd^3 * mean(w * gn * r), written in r's dtype and (as y's
 *            gradient) in y's dtype; dw = sum over rows of gn * r * rstd, accumulated per block in shared memory
 *            and written as per-block partials that a second small kernel sums in a fixed order.
 * Rows whose length is a multiple of 4 (and 16-byte aligned pointers) move 4 elements per access.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/common/dispatch.h"
#include "cuda/common/reduce.cuh"
#include "cuda/common/vec.cuh"
#include "cuda/rms_norm/rms_norm.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
constexpr int kThreads = 256;  // 8 rows at a time per block
constexpr int kMaxC = 12288;   // the backward's per-block dw partial lives in 48 KB of shared memory

template <typename R, typename Y, typename O, int V>
__global__ void __launch_bounds__(kThreads) add_rms_norm_fwd_kernel(const R* __restrict__ res, const Y* __restrict__ y,
                                                                    const float* __restrict__ w, R* r_out,
                                                                    O* __restrict__ n_out, float* __restrict__ rstd_out,
                                                                    int64_t N, int C, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; row < N; row += nwarps) {
    const int64_t base = row * C;
    float ss = 0.f;
    for (int c = lane * V; c < C; c += 32 * V) {
      float v[V];
      load<V>(res + base + c, v);
      if (y != nullptr) {
        float yv[V];
        load<V>(y + base + c, yv);
#pragma unroll
        for (int j = 0; j < V; ++j) v[j] = static_cast<float>(static_cast<R>(v[j] + yv[j]));  // r as stored
        store<V>(r_out + base + c, v);
      }
#pragma unroll
      for (int j = 0; j < V; ++j) ss += v[j] * v[j];
    }
    const float rs = rsqrtf(warp_sum(ss) / C + eps);
    if (lane == 0) rstd_out[row] = rs;
    const R* r = y != nullptr ? r_out : res;
    for (int c = lane * V; c < C; c += 32 * V) {
      float v[V], wv[V];
      load<V>(r + base + c, v);
      load<V>(w + c, wv);
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] *= rs * wv[j];
      store<V>(n_out + base + c, v);
    }
  }
}

template <typename R, typename G, typename Y, int V>
__global__ void __launch_bounds__(kThreads) add_rms_norm_bwd_kernel(const R* __restrict__ r, const float* __restrict__ w,
                                                                    const float* __restrict__ rstd,
                                                                    const R* __restrict__ gr, const G* __restrict__ gn,
                                                                    R* __restrict__ dr, Y* __restrict__ dy,
                                                                    float* __restrict__ dw_part, int64_t N, int C) {
  extern __shared__ float dw_s[];  // [C]
  for (int c = threadIdx.x; c < C; c += blockDim.x) dw_s[c] = 0.f;
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; row < N; row += nwarps) {
    const int64_t base = row * C;
    const float rs = rstd[row];
    float dot = 0.f;
    for (int c = lane * V; c < C; c += 32 * V) {
      float g[V], rv[V], wv[V];
      load<V>(gn + base + c, g);
      load<V>(r + base + c, rv);
      load<V>(w + c, wv);
#pragma unroll
      for (int j = 0; j < V; ++j) dot += wv[j] * g[j] * rv[j];
    }
    const float coef = warp_sum(dot) * rs * rs * rs / C;
    for (int c = lane * V; c < C; c += 32 * V) {
      float g[V], rv[V], wv[V], d[V];
      load<V>(gn + base + c, g);
      load<V>(r + base + c, rv);
      load<V>(w + c, wv);
      if (gr != nullptr) load<V>(gr + base + c, d);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        d[j] = (gr != nullptr ? d[j] : 0.f) + rs * wv[j] * g[j] - rv[j] * coef;
        atomicAdd(&dw_s[c + j], g[j] * rv[j] * rs);
      }
      store<V>(dr + base + c, d);
      if (dy != nullptr) store<V>(dy + base + c, d);
    }
  }
  __syncthreads();
  for (int c = threadIdx.x; c < C; c += blockDim.x) dw_part[static_cast<int64_t>(blockIdx.x) * C + c] = dw_s[c];
}

// dw from the backward's per-block partials [blocks, C]: column sums in a fixed order (deterministic), 32 columns by
// 8 row slices per block, the slices added through shared memory. (LibTorch's sum(0) over these partials took
// 13 us per call at C = 640 in the Llama profile, 0.5 ms per step.)
constexpr int kSumSlices = 8;
__global__ void __launch_bounds__(32 * kSumSlices) sum_partials_kernel(const float* __restrict__ part,
                                                                       float* __restrict__ out, int blocks, int C) {
  __shared__ float slice[kSumSlices][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (c < C)
    for (int b = threadIdx.y; b < blocks; b += kSumSlices) s += part[static_cast<int64_t>(b) * C + c];
  slice[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0 || c >= C) return;
  float t = 0.f;
#pragma unroll
  for (int k = 0; k < kSumSlices; ++k) t += slice[k][threadIdx.x];
  out[c] = t;
}

// 4 elements per access when the row length and every pointer allow it, else 1.
template <typename F>
void with_width(int64_t C, std::initializer_list<const void*> ptrs, F&& f) {
  if (C % 4 == 0 && aligned16(ptrs)) f(std::integral_constant<int, 4>{});
  else f(std::integral_constant<int, 1>{});
}

int grid_for(int64_t rows) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((rows + kThreads / 32 - 1) / (kThreads / 32), 4 * sms)));
}
}  // namespace

std::vector<at::Tensor> add_rms_norm_fwd(const at::Tensor& residual_in, const at::Tensor& y_in, const at::Tensor& w_in,
                                         double eps, at::ScalarType out_dtype) {
  const c10::cuda::CUDAGuard guard(residual_in.device());
  ELMAN_CHECK_FLOAT_DTYPE(residual_in);
  const int64_t C = residual_in.size(-1), N = residual_in.numel() / C;
  TORCH_CHECK(C <= kMaxC, "add_rms_norm: the kernel supports rows of up to ", kMaxC, " elements, got ", C,
              "; use the reference implementation (--impl reference)");
  auto residual = residual_in.contiguous();
  at::Tensor y;
  if (y_in.defined()) {
    ELMAN_CHECK_FLOAT_DTYPE(y_in);
    y = y_in.contiguous();
  }
  auto w = w_in.to(at::kFloat).contiguous();
  auto r = y.defined() ? ops::empty_output(residual.sizes(), residual.options()) : at::Tensor();
  auto n = ops::empty_output(residual.sizes(), residual.options().dtype(out_dtype));
  auto rstd = ops::empty_output({N}, residual.options().dtype(at::kFloat));
  if (N == 0) return {r, n, rstd};
  auto stream = at::cuda::getCurrentCUDAStream();
  with_type(residual.scalar_type(), [&](auto rt) {
    using R = decltype(rt);
    with_type(y.defined() ? y.scalar_type() : residual.scalar_type(), [&](auto yt) {
      using Y = decltype(yt);
      with_type(out_dtype, [&](auto ot) {
        using O = decltype(ot);
        const Y* yp = y.defined() ? y.data_ptr<Y>() : nullptr;
        R* rp = r.defined() ? r.data_ptr<R>() : nullptr;
        with_width(C, {residual.data_ptr(), yp, rp, n.data_ptr()}, [&](auto v) {
          add_rms_norm_fwd_kernel<R, Y, O, decltype(v)::value><<<grid_for(N), kThreads, 0, stream>>>(
              residual.data_ptr<R>(), yp, w.data_ptr<float>(), rp, n.data_ptr<O>(), rstd.data_ptr<float>(), N,
              static_cast<int>(C), static_cast<float>(eps));
        });
      });
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {r, n, rstd};
}

std::vector<at::Tensor> add_rms_norm_bwd(const at::Tensor& r_in, const at::Tensor& w_in, const at::Tensor& rstd,
                                         const at::Tensor& gr_in, const at::Tensor& gn_in, at::ScalarType y_dtype) {
  const c10::cuda::CUDAGuard guard(r_in.device());
  const int64_t C = r_in.size(-1), N = r_in.numel() / C;
  const bool with_y = y_dtype != at::ScalarType::Undefined;
  auto r = r_in.contiguous();
  auto w = w_in.to(at::kFloat).contiguous();
  auto gr = gr_in.defined() ? gr_in.to(r.scalar_type()).contiguous() : at::Tensor();
  auto dr = ops::empty_output(r.sizes(), r.options());
  if (!gn_in.defined() || N == 0) {  // n unused: r's gradient passes through, w gets none
    if (gr.defined()) dr.copy_(gr);
    else dr.zero_();
    return {dr, with_y ? dr.to(y_dtype, /*non_blocking=*/false, /*copy=*/true) : at::Tensor(),
            at::zeros({C}, r.options().dtype(at::kFloat))};
  }
  auto dy = with_y ? ops::empty_output(r.sizes(), r.options().dtype(y_dtype)) : at::Tensor();
  auto gn = gn_in.scalar_type() == at::kFloat || gn_in.scalar_type() == at::kBFloat16 ? gn_in.contiguous()
                                                                                      : gn_in.to(at::kFloat).contiguous();
  const int grid = grid_for(N);
  auto dw_part = at::empty({grid, C}, r.options().dtype(at::kFloat));
  auto stream = at::cuda::getCurrentCUDAStream();
  with_type(r.scalar_type(), [&](auto rt) {
    using R = decltype(rt);
    with_type(gn.scalar_type(), [&](auto gt) {
      using G = decltype(gt);
      with_type(with_y ? y_dtype : r.scalar_type(), [&](auto yt) {
        using Y = decltype(yt);
        const R* grp = gr.defined() ? gr.data_ptr<R>() : nullptr;
        Y* dyp = with_y ? dy.data_ptr<Y>() : nullptr;
        with_width(C, {r.data_ptr(), grp, gn.data_ptr(), dr.data_ptr(), dyp}, [&](auto v) {
          add_rms_norm_bwd_kernel<R, G, Y, decltype(v)::value><<<grid, kThreads, C * sizeof(float), stream>>>(
              r.data_ptr<R>(), w.data_ptr<float>(), rstd.data_ptr<float>(), grp, gn.data_ptr<G>(), dr.data_ptr<R>(),
              dyp, dw_part.data_ptr<float>(), N, static_cast<int>(C));
        });
      });
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto dw = at::empty({C}, dw_part.options());
  sum_partials_kernel<<<static_cast<int>((C + 31) / 32), dim3(32, kSumSlices), 0, stream>>>(
      dw_part.data_ptr<float>(), dw.data_ptr<float>(), grid, static_cast<int>(C));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {dr, dy, dw};
}

}  // namespace elman::cuda
