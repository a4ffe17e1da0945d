/* Fused residual add + RMSNorm or LayerNorm (ops/rms_norm/rms_norm.h).
 * One warp per row (rows strided over the grid), fp32 math; LN selects LayerNorm (mean subtracted, bias added):
 *   forward: pass 1 reads residual and y, writes r (rounded to residual's dtype) and sums r^2 over the row
 *            (LayerNorm: sums r, then a second pass over r sums (r - mean)^2); the last pass re-reads r (from
 *            L1/L2) and writes n = (r - mean) * rstd * w (+ b); rstd (and mean) per row are kept for the backward.
 *   backward: with x^ = (r - mean) * rstd and g' = gn * w:
 *            dr = gr + rstd * (g' - mean(g') - x^ * mean(g' * x^))  (RMSNorm: no mean, no mean(g') term),
 *            written in r's dtype and (as y's gradient) in y's dtype; dw = sum over rows of gn * x^ (and
 *            db = sum of gn), accumulated per block in shared memory and written as per-block partials that a
 *            second small kernel sums in a fixed order.
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
constexpr int kThreads = 256;           // 8 rows at a time per block
constexpr int kSharedFloats = 12288;    // the backward's per-block dw (and db) partials live in 48 KB of shared memory

template <typename R, typename Y, typename O, int V, bool LN>
__global__ void __launch_bounds__(kThreads)
    add_norm_fwd_kernel(const R* __restrict__ res, const Y* __restrict__ y, const float* __restrict__ w,
                        const float* __restrict__ b, R* r_out, O* __restrict__ n_out, float* __restrict__ rstd_out,
                        float* __restrict__ mean_out, int64_t N, int C, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; row < N; row += nwarps) {
    const int64_t base = row * C;
    float s = 0.f;  // sum of r^2 (RMSNorm) or of r (LayerNorm)
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
      for (int j = 0; j < V; ++j) s += LN ? v[j] : v[j] * v[j];
    }
    const R* r = y != nullptr ? r_out : res;
    float mu = 0.f;
    if (LN) {  // the variance about the mean, from a second pass (not E[r^2] - mean^2, which cancels)
      mu = warp_sum(s) / C;
      s = 0.f;
      for (int c = lane * V; c < C; c += 32 * V) {
        float v[V];
        load<V>(r + base + c, v);
#pragma unroll
        for (int j = 0; j < V; ++j) s += (v[j] - mu) * (v[j] - mu);
      }
      if (lane == 0) mean_out[row] = mu;
    }
    const float rs = rsqrtf(warp_sum(s) / C + eps);
    if (lane == 0) rstd_out[row] = rs;
    for (int c = lane * V; c < C; c += 32 * V) {
      float v[V], wv[V], bv[V];
      load<V>(r + base + c, v);
      load<V>(w + c, wv);
      if (LN) load<V>(b + c, bv);
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] = (v[j] - mu) * rs * wv[j] + (LN ? bv[j] : 0.f);
      store<V>(n_out + base + c, v);
    }
  }
}

template <typename R, typename G, typename Y, int V, bool LN>
__global__ void __launch_bounds__(kThreads)
    add_norm_bwd_kernel(const R* __restrict__ r, const float* __restrict__ w, const float* __restrict__ rstd,
                        const float* __restrict__ mean, const R* __restrict__ gr, const G* __restrict__ gn,
                        R* __restrict__ dr, Y* __restrict__ dy, float* __restrict__ part, int64_t N, int C) {
  extern __shared__ float dw_s[];  // [C] dw, then (LayerNorm) [C] db
  float* db_s = dw_s + C;
  for (int c = threadIdx.x; c < (LN ? 2 : 1) * C; c += blockDim.x) dw_s[c] = 0.f;
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; row < N; row += nwarps) {
    const int64_t base = row * C;
    const float rs = rstd[row], mu = LN ? mean[row] : 0.f;
    float dot = 0.f, gsum = 0.f;  // sums of g' * x^ and of g'
    for (int c = lane * V; c < C; c += 32 * V) {
      float g[V], rv[V], wv[V];
      load<V>(gn + base + c, g);
      load<V>(r + base + c, rv);
      load<V>(w + c, wv);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        dot += wv[j] * g[j] * (rv[j] - mu) * rs;
        if (LN) gsum += wv[j] * g[j];
      }
    }
    const float dot_c = warp_sum(dot) / C, gmean = LN ? warp_sum(gsum) / C : 0.f;
    for (int c = lane * V; c < C; c += 32 * V) {
      float g[V], rv[V], wv[V], d[V];
      load<V>(gn + base + c, g);
      load<V>(r + base + c, rv);
      load<V>(w + c, wv);
      if (gr != nullptr) load<V>(gr + base + c, d);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float xh = (rv[j] - mu) * rs;
        d[j] = (gr != nullptr ? d[j] : 0.f) + rs * (wv[j] * g[j] - gmean - xh * dot_c);
        atomicAdd(&dw_s[c + j], g[j] * xh);
        if (LN) atomicAdd(&db_s[c + j], g[j]);
      }
      store<V>(dr + base + c, d);
      if (dy != nullptr) store<V>(dy + base + c, d);
    }
  }
  __syncthreads();
  const int width = (LN ? 2 : 1) * C;
  for (int c = threadIdx.x; c < width; c += blockDim.x) part[static_cast<int64_t>(blockIdx.x) * width + c] = dw_s[c];
}

// dw (and db) from the backward's per-block partials [blocks, C or 2C]: column sums in a fixed order
// (deterministic), 32 columns by 8 row slices per block, the slices added through shared memory. (LibTorch's sum(0) over these partials took
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

// LayerNorm (the LN kernels) when `layer`, else RMSNorm.
template <typename F>
void with_kind(bool layer, F&& f) {
  if (layer) f(std::true_type{});
  else f(std::false_type{});
}

void check_row_length(int64_t C, bool layer) {
  const int64_t max_c = layer ? kSharedFloats / 2 : kSharedFloats;
  TORCH_CHECK(C <= max_c, layer ? "add_layer_norm" : "add_rms_norm", ": the kernel supports rows of up to ", max_c,
              " elements, got ", C, "; use the reference implementation (--impl reference)");
}
}  // namespace

std::vector<at::Tensor> add_norm_fwd(const at::Tensor& residual_in, const at::Tensor& y_in, const at::Tensor& w_in,
                                     const at::Tensor& b_in, double eps, at::ScalarType out_dtype) {
  const c10::cuda::CUDAGuard guard(residual_in.device());
  ELMAN_CHECK_FLOAT_DTYPE(residual_in);
  const bool layer = b_in.defined();
  const int64_t C = residual_in.size(-1), N = residual_in.numel() / C;
  check_row_length(C, layer);
  auto residual = residual_in.contiguous();
  at::Tensor y;
  if (y_in.defined()) {
    ELMAN_CHECK_FLOAT_DTYPE(y_in);
    y = y_in.contiguous();
  }
  auto w = w_in.to(at::kFloat).contiguous();
  auto b = layer ? b_in.to(at::kFloat).contiguous() : at::Tensor();
  auto r = y.defined() ? ops::empty_output(residual.sizes(), residual.options()) : at::Tensor();
  auto n = ops::empty_output(residual.sizes(), residual.options().dtype(out_dtype));
  auto rstd = ops::empty_output({N}, residual.options().dtype(at::kFloat));
  auto mean = layer ? ops::empty_output({N}, residual.options().dtype(at::kFloat)) : at::Tensor();
  if (N == 0) return {r, n, rstd, mean};
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
          with_kind(layer, [&](auto ln) {
            add_norm_fwd_kernel<R, Y, O, decltype(v)::value, decltype(ln)::value><<<grid_for(N), kThreads, 0, stream>>>(
                residual.data_ptr<R>(), yp, w.data_ptr<float>(), layer ? b.data_ptr<float>() : nullptr, rp,
                n.data_ptr<O>(), rstd.data_ptr<float>(), layer ? mean.data_ptr<float>() : nullptr, N,
                static_cast<int>(C), static_cast<float>(eps));
          });
        });
      });
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {r, n, rstd, mean};
}

std::vector<at::Tensor> add_norm_bwd(const at::Tensor& r_in, const at::Tensor& w_in, const at::Tensor& rstd,
                                     const at::Tensor& mean, const at::Tensor& gr_in, const at::Tensor& gn_in,
                                     at::ScalarType y_dtype) {
  const c10::cuda::CUDAGuard guard(r_in.device());
  const bool layer = mean.defined();
  const int64_t C = r_in.size(-1), N = r_in.numel() / C;
  const bool with_y = y_dtype != at::ScalarType::Undefined;
  auto r = r_in.contiguous();
  auto w = w_in.to(at::kFloat).contiguous();
  auto gr = gr_in.defined() ? gr_in.to(r.scalar_type()).contiguous() : at::Tensor();
  auto dr = ops::empty_output(r.sizes(), r.options());
  auto f32 = r.options().dtype(at::kFloat);
  if (!gn_in.defined() || N == 0) {  // n unused: r's gradient passes through, w (and b) get none
    if (gr.defined()) dr.copy_(gr);
    else dr.zero_();
    return {dr, with_y ? dr.to(y_dtype, /*non_blocking=*/false, /*copy=*/true) : at::Tensor(), at::zeros({C}, f32),
            layer ? at::zeros({C}, f32) : at::Tensor()};
  }
  auto dy = with_y ? ops::empty_output(r.sizes(), r.options().dtype(y_dtype)) : at::Tensor();
  auto gn = gn_in.scalar_type() == at::kFloat || gn_in.scalar_type() == at::kBFloat16 ? gn_in.contiguous()
                                                                                      : gn_in.to(at::kFloat).contiguous();
  const int grid = grid_for(N);
  const int64_t width = (layer ? 2 : 1) * C;  // per block: dw, then (LayerNorm) db
  auto part = at::empty({grid, width}, f32);
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
          with_kind(layer, [&](auto ln) {
            add_norm_bwd_kernel<R, G, Y, decltype(v)::value, decltype(ln)::value>
                <<<grid, kThreads, width * sizeof(float), stream>>>(
                    r.data_ptr<R>(), w.data_ptr<float>(), rstd.data_ptr<float>(),
                    layer ? mean.data_ptr<float>() : nullptr, grp, gn.data_ptr<G>(), dr.data_ptr<R>(), dyp,
                    part.data_ptr<float>(), N, static_cast<int>(C));
          });
        });
      });
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto sums = at::empty({width}, f32);
  sum_partials_kernel<<<static_cast<int>((width + 31) / 32), dim3(32, kSumSlices), 0, stream>>>(
      part.data_ptr<float>(), sums.data_ptr<float>(), grid, static_cast<int>(width));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {dr, dy, layer ? sums.narrow(0, 0, C) : sums, layer ? sums.narrow(0, C, C) : at::Tensor()};
}

}  // namespace elman::cuda
