/* Depthwise causal short convolution with fused SiLU, backward (ops/short_conv/reference.h has the math).
 * With a = bias + sum_i w_i x_{t-W+1+i} recomputed from x and ga = gy silu'(a) (ga = gy without the SiLU):
 *
 *   dx[s]   = sum_{i<W} w_i ga[s+W-1-i]          (ga = 0 past T-1)
 *   dw[c,i] = sum_{b,t} ga[b,t,c] x[b,t-W+1+i,c]
 *   dbias   = sum_{b,t} ga[b,t,c]
 *
 * y's gradient arrives as its pieces (short_conv.cuh's Pieces), each read where it is; dx is written through its
 * batch and step strides (the layers pass the columns of their projection's gradient, see ops/common/grad_sink.h).
 * Thread layout as the forward (short_conv.cuh). A thread walks its run's steps t0 .. t0+kRun-1 and W-1 more
 * (whose ga it recomputes from x and gy, the halo its dx needs), keeping the last W inputs and the last W values
 * of ga in registers, and writes dx[t-W+1] once ga[t] is known. Its dw and dbias over its own kRun steps stay in
 * registers; the block sums its kRuns threads per channel in shared memory in a fixed order and writes one partial
 * per block to part [B gridDim.y, W+1, C], which the launcher sums over dim 0: no atomics, deterministic.
 * Numerics: fp32 arithmetic and sums; dx rounded once to x's dtype.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/common/dispatch.h"
#include "cuda/short_conv/short_conv.cuh"
#include "cuda/short_conv/short_conv.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
using namespace short_conv;

template <typename scalar_t, int V, int W>
__global__ void __launch_bounds__(kThreads) short_conv_bwd_kernel(const Params<scalar_t> p) {
  __shared__ float red[kRuns][W + 1][kLanes * V];  // each thread's dw (rows 0..W-1) and dbias (row W)
  const int c0 = (blockIdx.x * kLanes + threadIdx.x) * V;
  const int t0 = (blockIdx.y * kRuns + threadIdx.y) * kRun;
  float dw[W][V], db[V];
#pragma unroll
  for (int j = 0; j < V; ++j) {
    db[j] = 0.f;
#pragma unroll
    for (int i = 0; i < W; ++i) dw[i][j] = 0.f;
  }
  if (c0 < p.C && t0 < p.T) {
    float w[W][V], bias[V];
    load_taps<V, W>(p, c0, w, bias);
    const scalar_t* x = p.x + blockIdx.z * p.x_sb + c0;
    const auto gy = piece_row(p.gy, blockIdx.z, c0);  // null: this piece has no gradient (zeros)
    scalar_t* dx = p.dx + blockIdx.z * p.dx_sb + c0;
    float win[W][V], gq[W][V];  // x and ga at t-W+1 .. t
#pragma unroll
    for (int i = 0; i < W; ++i) {
      const int t = t0 - (W - 1) + i;
      if (i + 1 < W && t >= 0) {
        load<V>(x + t * p.x_st, win[i]);
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j) win[i][j] = 0.f;
      }
#pragma unroll
      for (int j = 0; j < V; ++j) gq[i][j] = 0.f;
    }
    const int t_own = min(t0 + kRun, p.T), t_end = t_own + W - 1;
#pragma unroll 2
    for (int t = t0; t < t_end; ++t) {
      shift<V, W>(gq);
      if (t < p.T) {
        load<V>(x + t * p.x_st, win[W - 1]);
        float g[V], a[V];
        if (gy.at != nullptr) {
          load<V>(gy.at + t * gy.st, g);
        } else {
#pragma unroll
          for (int j = 0; j < V; ++j) g[j] = 0.f;
        }
        conv<V, W>(w, bias, win, a);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          if (p.silu) {
            const float s = sigmoid(a[j]);
            g[j] *= s * (1.f + a[j] * (1.f - s));
          }
          gq[W - 1][j] = g[j];
        }
        if (t < t_own) {
#pragma unroll
          for (int j = 0; j < V; ++j) {
            db[j] += g[j];
#pragma unroll
            for (int i = 0; i < W; ++i) dw[i][j] = fmaf(g[j], win[i][j], dw[i][j]);
          }
        }
        shift<V, W>(win);
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j) gq[W - 1][j] = 0.f;
      }
      const int s = t - (W - 1);
      if (s >= t0) {
        float d[V];
#pragma unroll
        for (int j = 0; j < V; ++j) {
          d[j] = 0.f;
#pragma unroll
          for (int i = 0; i < W; ++i) d[j] = fmaf(w[i][j], gq[W - 1 - i][j], d[j]);
        }
        store<V>(dx + s * p.dx_st, d);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < V; ++j) {
#pragma unroll
    for (int i = 0; i < W; ++i) red[threadIdx.y][i][threadIdx.x * V + j] = dw[i][j];
    red[threadIdx.y][W][threadIdx.x * V + j] = db[j];
  }
  __syncthreads();
  // Per channel, the block's kRuns partials summed in order of threadIdx.y.
  float* part = p.part + (static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y) * (W + 1) * p.C;
  const int cb = blockIdx.x * kLanes * V;
  for (int k = threadIdx.y * kLanes + threadIdx.x; k < (W + 1) * kLanes * V; k += kThreads) {
    const int i = k / (kLanes * V), cl = k - i * (kLanes * V);
    if (cb + cl >= p.C) continue;
    float sum = 0.f;
#pragma unroll
    for (int r = 0; r < kRuns; ++r) sum += red[r][i][cl];
    part[static_cast<int64_t>(i) * p.C + cb + cl] = sum;
  }
}
}  // namespace

std::vector<at::Tensor> short_conv_bwd(const at::Tensor& x, const at::Tensor& w_in, const at::Tensor& bias_in,
                                       const std::vector<at::Tensor>& gys, const std::vector<int64_t>& sizes, bool silu,
                                       const at::Tensor& dx_into) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), W = w_in.size(2);
  short_conv::check_sizes(sizes, C);
  TORCH_CHECK(gys.size() == sizes.size(), "short_conv_bwd: one gradient per piece");
  auto w = w_in.to(at::kFloat).contiguous();
  auto bias = bias_in.defined() ? bias_in.to(at::kFloat).contiguous() : at::Tensor();
  std::vector<at::Tensor> gy(gys.size());
  std::vector<const void*> ptrs{x.data_ptr()};
  std::vector<int64_t> counts{C, x.stride(0), x.stride(1)};
  for (size_t i = 0; i < gys.size(); ++i) {
    counts.push_back(sizes[i]);  // every piece holds whole vectors
    if (!gys[i].defined()) continue;
    TORCH_CHECK(gys[i].sizes() == at::IntArrayRef({B, T, sizes[i]}), "short_conv_bwd: piece ", i, "'s gradient is ",
                gys[i].sizes(), ", expected [", B, ",", T, ",", sizes[i], "]");
    gy[i] = gys[i].to(x.scalar_type());
    if (gy[i].stride(2) != 1 && sizes[i] > 1) gy[i] = gy[i].contiguous();  // channels adjacent
    ptrs.push_back(gy[i].data_ptr());
    counts.insert(counts.end(), {gy[i].stride(0), gy[i].stride(1)});
  }
  auto dx = dx_into;
  if (dx.defined()) {
    TORCH_CHECK(dx.is_cuda() && dx.scalar_type() == x.scalar_type() && dx.sizes() == x.sizes() &&
                    (dx.stride(2) == 1 || C == 1),
                "short_conv_bwd: dx must be [B,T,C] in x's dtype with C's stride 1");
  } else {
    dx = ops::empty_output({B, T, C}, x.options());
  }
  ptrs.push_back(dx.data_ptr());
  counts.insert(counts.end(), {dx.stride(0), dx.stride(1)});
  const int V = short_conv::vec_width(x.element_size(), ptrs, counts);
  const int64_t t_blocks = blocks_for(T, short_conv::kRuns * short_conv::kRun);
  auto part = ops::empty_output({B * t_blocks, W + 1, C}, x.options().dtype(at::kFloat));
  with_type(x.scalar_type(), [&](auto tt) {
    using T_ = decltype(tt);
    short_conv::Params<T_> p{};
    p.x = x.data_ptr<T_>(), p.x_sb = x.stride(0), p.x_st = x.stride(1);
    p.w = w.data_ptr<float>(), p.bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
    p.gy = short_conv::pieces_of<const T_>(gy, sizes);
    p.dx = dx.data_ptr<T_>(), p.dx_sb = dx.stride(0), p.dx_st = dx.stride(1), p.part = part.data_ptr<float>();
    p.B = static_cast<int>(B), p.T = static_cast<int>(T), p.C = static_cast<int>(C), p.silu = silu;
    short_conv::dispatch(V, W, [&](auto v, auto wd) {
      constexpr int Vc = decltype(v)::value, Wc = decltype(wd)::value;
      const dim3 grid(blocks_for(C / Vc, short_conv::kLanes), static_cast<unsigned>(t_blocks),
                      static_cast<unsigned>(B)),
          block(short_conv::kLanes, short_conv::kRuns);
      short_conv_bwd_kernel<T_, Vc, Wc><<<grid, block, 0, at::cuda::getCurrentCUDAStream()>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  auto sums = part.sum(0);  // [W+1, C], a fixed-order reduction over the blocks
  return {dx, sums.narrow(0, 0, W).t().contiguous().view({C, 1, W}), sums[W].contiguous()};
}

}  // namespace elman::cuda
