/* Depthwise causal short convolution with fused SiLU, forward (ops/short_conv/reference.h has the math):
 *
 *   y[b,t,c] = silu(bias[c] + sum_{i<W} w[c,i] x[b,t-W+1+i,c])      (x = 0 before t = 0)
 *
 * Tiles as short_conv.cuh has them: a block copies its tile of x (with W-1 steps of halo) into shared memory in
 * E-element vectors; then each thread walks a run of steps of one channel with the conv's inputs in registers and
 * writes y (a warp 32 adjacent channels per store) as its pieces (the layer's q, k, v or x, B, C), each a contiguous
 * tensor of its own.
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

template <typename T, int E, int W>
__global__ void __launch_bounds__(kThreads) short_conv_fwd_kernel(const Params<T> p) {
  constexpr int TT = tile_steps<T>();
  __shared__ __align__(16) T xs[TT + W - 1][kTileC];  // x at steps t0 - (W-1) + r
  __shared__ float ws[W][kTileC], bs[kTileC];
  const int b = blockIdx.z, c_tile = blockIdx.x * kTileC, t0 = blockIdx.y * TT;
  load_x_tile<T, E, W, TT + W - 1>(p, b, c_tile, t0, xs, ws, bs);
  __syncthreads();
  // Channel j, a run of TT / 4 consecutive steps from g TT / 4, the conv's inputs in a window of registers; one value
  // per store, a warp's 32 adjacent channels at once.
  constexpr int groups = kThreads / kTileC, R = TT / groups;
  const int j = threadIdx.x % kTileC, g = threadIdx.x / kTileC, c = c_tile + j;
  if (c >= p.C) return;
  const auto y = piece_row(p.y, b, c);
  float w[W], win[W];
#pragma unroll
  for (int i = 0; i < W; ++i) w[i] = ws[i][j];
  const float bias = bs[j];
  const int r0 = g * R, r_end = min(r0 + R, p.T - t0);
#pragma unroll
  for (int i = 0; i + 1 < W; ++i) win[i + 1] = static_cast<float>(xs[r0 + i][j]);
  for (int r = r0; r < r_end; ++r) {
#pragma unroll
    for (int i = 0; i + 1 < W; ++i) win[i] = win[i + 1];
    win[W - 1] = static_cast<float>(xs[r + W - 1][j]);  // win[i] = x at step t0 + r - (W-1) + i
    float a = bias;
#pragma unroll
    for (int i = 0; i < W; ++i) a = fmaf(w[i], win[i], a);
    if (p.silu) a *= sigmoid(a);
    y.at[(t0 + r) * y.st] = static_cast<T>(a);
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
  for (int64_t n : sizes) ys.push_back(ops::empty_output({B, T, n}, x.options()));
  // x's loads in 16-byte vectors where its pointer and strides allow them, else single elements.
  const bool wide = short_conv::vectors_fit(x.element_size(), {x.data_ptr()}, {C, x.stride(0), x.stride(1)});
  with_type(x.scalar_type(), [&](auto tt) {
    using T_ = decltype(tt);
    short_conv::Params<T_> p{};
    p.x = x.data_ptr<T_>(), p.x_sb = x.stride(0), p.x_st = x.stride(1);
    p.w = w.data_ptr<float>(), p.bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
    p.y = short_conv::pieces_of<T_>(ys, sizes);
    p.B = static_cast<int>(B), p.T = static_cast<int>(T), p.C = static_cast<int>(C), p.silu = silu;
    short_conv::launch_tiles(wide, W, B, T, C, p, [](auto e, auto wd) {
      return short_conv_fwd_kernel<T_, decltype(e)::value, decltype(wd)::value>;
    });
  });
  return ys;
}

}  // namespace elman::cuda
