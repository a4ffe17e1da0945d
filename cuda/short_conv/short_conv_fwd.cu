/* Depthwise causal short convolution with fused SiLU, forward (ops/short_conv/reference.h has the math):
 *
 *   y[b,t,c] = silu(bias[c] + sum_{i<W} w[c,i] x[b,t-W+1+i,c])      (x = 0 before t = 0)
 *
 * Thread layout in short_conv.cuh: each thread walks kRun steps of V adjacent channels with the last W inputs in
 * registers; one load of x and one store of y per step, V elements per access. y is written as its pieces (the
 * layer's q, k, v or x, B, C), each a contiguous tensor of its own.
 * Saved for backward (by ops/short_conv): x, w, bias; the backward recomputes the conv.
 * Numerics: fp32 taps and arithmetic, x and y in float32 or bfloat16, y rounded once.
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
__global__ void __launch_bounds__(kThreads) short_conv_fwd_kernel(const Params<scalar_t> p) {
  const int c0 = (blockIdx.x * kLanes + threadIdx.x) * V;
  const int t0 = (blockIdx.y * kRuns + threadIdx.y) * kRun;
  if (c0 >= p.C || t0 >= p.T) return;
  float w[W][V], bias[V];
  load_taps<V, W>(p, c0, w, bias);
  const scalar_t* x = p.x + blockIdx.z * p.x_sb + c0;
  const auto y = piece_row(p.y, blockIdx.z, c0);  // the pieces are whole vectors: V divides their sizes
  float win[W][V];  // x at t-W+1 .. t
#pragma unroll
  for (int i = 0; i + 1 < W; ++i) {
    const int t = t0 - (W - 1) + i;
    if (t >= 0) {
      load<V>(x + t * p.x_st, win[i]);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) win[i][j] = 0.f;
    }
  }
  const int t1 = min(t0 + kRun, p.T);
#pragma unroll 4
  for (int t = t0; t < t1; ++t) {
    load<V>(x + t * p.x_st, win[W - 1]);
    float a[V];
    conv<V, W>(w, bias, win, a);
    if (p.silu) {
#pragma unroll
      for (int j = 0; j < V; ++j) a[j] *= sigmoid(a[j]);
    }
    store<V>(y.at + t * y.st, a);
    shift<V, W>(win);
  }
}
}  // namespace

std::vector<at::Tensor> short_conv_fwd(const at::Tensor& x, const at::Tensor& w_in, const at::Tensor& bias_in, bool silu,
                                       const std::vector<int64_t>& sizes) {
  const c10::cuda::CUDAGuard guard(x.device());
  ELMAN_CHECK_FLOAT_DTYPE(x);
  TORCH_CHECK(x.dim() == 3 && (x.stride(2) == 1 || x.size(2) == 1), "short_conv: x must be [B,T,C] with C's stride 1");
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), W = w_in.size(2);
  TORCH_CHECK(B < 65536 && T < (1LL << 31) && B * T * C < (1LL << 62), "short_conv: x too large for the kernel");
  short_conv::check_sizes(sizes, C);
  auto w = w_in.to(at::kFloat).contiguous();
  auto bias = bias_in.defined() ? bias_in.to(at::kFloat).contiguous() : at::Tensor();
  std::vector<at::Tensor> ys;
  std::vector<const void*> ptrs{x.data_ptr()};
  std::vector<int64_t> counts{C, x.stride(0), x.stride(1)};
  for (int64_t n : sizes) {
    ys.push_back(ops::empty_output({B, T, n}, x.options()));
    ptrs.push_back(ys.back().data_ptr()), counts.push_back(n);
  }
  const int V = short_conv::vec_width(x.element_size(), ptrs, counts);
  with_type(x.scalar_type(), [&](auto tt) {
    using T_ = decltype(tt);
    short_conv::Params<T_> p{};
    p.x = x.data_ptr<T_>(), p.x_sb = x.stride(0), p.x_st = x.stride(1);
    p.w = w.data_ptr<float>(), p.bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
    p.y = short_conv::pieces_of<T_>(ys, sizes);
    p.B = static_cast<int>(B), p.T = static_cast<int>(T), p.C = static_cast<int>(C), p.silu = silu;
    short_conv::dispatch(V, W, [&](auto v, auto wd) {
      constexpr int Vc = decltype(v)::value, Wc = decltype(wd)::value;
      const dim3 grid(blocks_for(C / Vc, short_conv::kLanes), blocks_for(T, short_conv::kRuns * short_conv::kRun),
                      static_cast<unsigned>(B)),
          block(short_conv::kLanes, short_conv::kRuns);
      short_conv_fwd_kernel<T_, Vc, Wc><<<grid, block, 0, at::cuda::getCurrentCUDAStream()>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return ys;
}

}  // namespace elman::cuda
