/* Depthwise causal short convolution with fused SiLU, backward (ops/short_conv/reference.h has the math).
 * With a = bias + sum_i w_i x_{t-W+1+i} recomputed from x and ga = gy silu'(a) (ga = gy without the SiLU):
 *
 *   dx[s]   = sum_{i<W} w_i ga[s+W-1-i]          (ga = 0 past T-1)
 *   dw[c,i] = sum_{b,t} ga[b,t,c] x[b,t-W+1+i,c]
 *   dbias   = sum_{b,t} ga[b,t,c]
 *
 * Tiles as short_conv.cuh has them (kTileC channels x TT steps, TT = 64 for bf16, 32 for fp32, per block):
 *   0. the tile's x (with W-1 steps of halo on both sides) and gy (W-1 steps past it) into shared memory, every
 *      thread issuing its E-element vector loads (16 bytes where everything is aligned) before any is used;
 *   1. ga over the tile and its W-1 following steps (the halo dx needs) into shared memory (fp32): each thread walks
 *      a run of steps of one channel with the conv's inputs in registers, adding its dw and dbias terms over the
 *      tile's own steps in registers;
 *   2. dx from ga and the taps, each thread a run of steps of one channel (a warp stores 32 adjacent channels).
 * The block sums its threads' dw and dbias per channel in shared memory in a fixed order and writes one partial per
 * block to part [B gridDim.y, W+1, C], which the launcher sums over dim 0: no atomics, deterministic.
 * y's gradient arrives as its pieces (short_conv.cuh's Pieces), each read where it is; dx is written through its
 * batch and step strides (the layers pass the columns of their projection's gradient, see ops/common/grad_sink.h).
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

constexpr int kGroups = kThreads / kTileC;  // runs of steps per channel (threads per channel)

template <typename T, int E, int W>
__global__ void __launch_bounds__(kThreads) short_conv_bwd_kernel(const Params<T> p) {
  constexpr int H = W - 1, TT = tile_steps<T>(), XR = TT + 2 * H, GR = TT + H, CH = kTileC / E;
  __shared__ __align__(16) T xs[XR][kTileC];      // x at steps t0 - H + r
  __shared__ __align__(16) T gs[GR][kTileC];      // gy at steps t0 + r
  __shared__ float ga[GR][kTileC];                // ga at steps t0 + r
  __shared__ float ws[W][kTileC], bs[kTileC];     // the taps and the bias of the tile's channels
  __shared__ float red[kGroups][W + 1][kTileC];   // each thread's dw (rows 0..W-1) and dbias (row W)
  const int tid = threadIdx.x, b = blockIdx.z, c_tile = blockIdx.x * kTileC, t0 = blockIdx.y * TT;

  load_x_tile<T, E, W, XR>(p, b, c_tile, t0, xs, ws, bs);
  {  // gy, with thread tid's vector column fixed as in load_x_tile
    const int k = tid % CH, c = c_tile + k * E;
    const auto gy = c < p.C ? piece_row(p.gy, b, c) : PieceRow<const T>{nullptr, 0};
    for (int r = tid / CH; r < GR; r += kThreads / CH) {
      const int t = t0 + r;
      *reinterpret_cast<Vec<T, E>*>(&gs[r][k * E]) = load_or_zero<T, E>(gy.at + t * gy.st, gy.at != nullptr && t < p.T);
    }
  }
  __syncthreads();

  // 1. ga, and this thread's dw and dbias terms: channel j, a run of R1 consecutive steps from g R1, the conv's
  //    inputs in a window of registers (gy is 0 past T, so is ga).
  constexpr int R1 = (GR + kGroups - 1) / kGroups, R2 = TT / kGroups;
  const int j = tid % kTileC, g = tid / kTileC;
  float w[W], dw[W], win[W], db = 0.f;
#pragma unroll
  for (int i = 0; i < W; ++i) w[i] = ws[i][j], dw[i] = 0.f;
  const float bias = bs[j];
  const int r1 = g * R1, r1_end = min(GR, r1 + R1);
#pragma unroll
  for (int i = 0; i + 1 < W; ++i) win[i + 1] = static_cast<float>(xs[r1 + i][j]);
  for (int r = r1; r < r1_end; ++r) {
#pragma unroll
    for (int i = 0; i + 1 < W; ++i) win[i] = win[i + 1];
    win[W - 1] = static_cast<float>(xs[r + H][j]);  // win[i] = x at step t0 + r - H + i
    float a = bias;
#pragma unroll
    for (int i = 0; i < W; ++i) a = fmaf(w[i], win[i], a);
    float gv = static_cast<float>(gs[r][j]);
    if (p.silu) {
      const float sg = sigmoid(a);
      gv *= sg * (1.f + a * (1.f - sg));
    }
    ga[r][j] = gv;
    if (r < TT) {  // the tile's own steps (the rest is the next tile's)
      db += gv;
#pragma unroll
      for (int i = 0; i < W; ++i) dw[i] = fmaf(gv, win[i], dw[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < W; ++i) red[g][i][j] = dw[i];
  red[g][W][j] = db;
  __syncthreads();

  // 2. dx[t0 + r] = sum_i w_i ga[r + H - i]: channel j, R2 consecutive steps from g R2, ga in a window of registers
  //    (win[i] = ga at row r + i); one value per store, a warp's 32 adjacent channels at once.
  const int c = c_tile + j;
  if (c < p.C) {
    T* dxcol = p.dx + b * p.dx_sb + c;
    const int r2 = g * R2, r2_end = min(r2 + R2, p.T - t0);
#pragma unroll
    for (int i = 0; i + 1 < W; ++i) win[i + 1] = ga[r2 + i][j];
    for (int r = r2; r < r2_end; ++r) {
#pragma unroll
      for (int i = 0; i + 1 < W; ++i) win[i] = win[i + 1];
      win[W - 1] = ga[r + H][j];
      float d = 0.f;
#pragma unroll
      for (int i = 0; i < W; ++i) d = fmaf(w[i], win[H - i], d);
      dxcol[(t0 + r) * p.dx_st] = static_cast<T>(d);
    }
  }

  // Per channel, the block's kGroups partials summed in order of g.
  float* part = p.part + (static_cast<int64_t>(b) * gridDim.y + blockIdx.y) * (W + 1) * p.C;
  for (int idx = tid; idx < (W + 1) * kTileC; idx += kThreads) {
    const int i = idx / kTileC, jj = idx - i * kTileC, c = c_tile + jj;
    if (c >= p.C) continue;
    float sum = 0.f;
#pragma unroll
    for (int gg = 0; gg < kGroups; ++gg) sum += red[gg][i][jj];
    part[static_cast<int64_t>(i) * p.C + c] = sum;
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
  // 16-byte vectors where every pointer, stride and piece allows them, else single elements.
  const bool wide = short_conv::vectors_fit(x.element_size(), ptrs, counts);
  at::Tensor part;
  with_type(x.scalar_type(), [&](auto tt) {
    using T_ = decltype(tt);
    part = ops::empty_output({B * blocks_for(T, tile_steps<T_>()), W + 1, C}, x.options().dtype(at::kFloat));
    short_conv::Params<T_> p{};
    p.x = x.data_ptr<T_>(), p.x_sb = x.stride(0), p.x_st = x.stride(1);
    p.w = w.data_ptr<float>(), p.bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
    p.gy = short_conv::pieces_of<const T_>(gy, sizes);
    p.dx = dx.data_ptr<T_>(), p.dx_sb = dx.stride(0), p.dx_st = dx.stride(1), p.part = part.data_ptr<float>();
    p.B = static_cast<int>(B), p.T = static_cast<int>(T), p.C = static_cast<int>(C), p.silu = silu;
    short_conv::launch_tiles(wide, W, B, T, C, p, [](auto e, auto wd) {
      return short_conv_bwd_kernel<T_, decltype(e)::value, decltype(wd)::value>;
    });
  });
  auto sums = part.sum(0);  // [W+1, C], a fixed-order reduction over the blocks
  return {dx, sums.narrow(0, 0, W).t().contiguous().view({C, 1, W}), sums[W].contiguous()};
}

}  // namespace elman::cuda
