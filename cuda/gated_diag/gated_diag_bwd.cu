/* Gated-diagonal Elman cells, backward (full BPTT; recurrences and shapes as in gated_diag_fwd.cu).
 *
 * One thread per (b, d) walks t = T-1 .. 0 carrying dh (fp32), the gradient reaching h_t from later steps;
 * it starts from dh_T, so gradients flow from the final state too.
 *   G   = dh + dy_t * (2 h_t s_t + h_t^2 s_t (1 - s_t))        s_t = sigmoid(h_t)   (selfgate')
 *   dh  = Cell::bwd(G, h_{t-1}, a_t, p_t, w, da, dp, dw)       (after t = 0 this is dh0)
 * da, dp go to dproj[b,t,:]; parameter gradients are summed per thread over T in fp32 and reduced over B
 * on the host side (deterministic: no atomics).
 * Inputs: proj [B,T,2D], w [P,D] f32, h0 [B,D] f32, h_hist [B,T,D] f32, dy [B,T,D] (proj dtype), dh_T [B,D] f32.
 * Outputs: dproj [B,T,2D] (proj dtype), dw [P,D] f32, dh0 [B,D] f32.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/gated_diag/cells.cuh"
#include "cuda/gated_diag/gated_diag.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {

constexpr int kThreads = 64;
constexpr int kSteps = 8;

template <typename scalar_t>
struct BwdParams {
  const scalar_t* proj;  // [B,T,2D]
  const float* w;        // [P,D]
  const float* h0;       // [B,D]
  const float* h_hist;   // [B,T,D]
  const scalar_t* dy;    // [B,T,D] or nullptr (zero)
  const float* dh_T;     // [B,D] or nullptr (zero)
  scalar_t* dproj;       // [B,T,2D]
  float* dw_part;        // [P,B,D]
  float* dh0;            // [B,D]
  int B, T, D;
};

template <typename Cell, typename scalar_t>
__global__ void __launch_bounds__(kThreads) gated_diag_bwd_kernel(const BwdParams<scalar_t> p) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= p.B * p.D) return;
  const int b = idx / p.D, d = idx % p.D;
  ParamRegs<Cell> w, dw;
#pragma unroll
  for (int i = 0; i < Cell::P; ++i) w[i] = p.w[i * p.D + d], dw[i] = 0.f;
  const int64_t proj_off = static_cast<int64_t>(b) * p.T * 2 * p.D + d;
  const int64_t st_off = static_cast<int64_t>(b) * p.T * p.D + d;
  // A block holds the inputs of steps t1, t1-1, ..., t1-kSteps+1 (zero below t = 0) and hs[u] = h_{t1-u} for
  // u = 0 .. kSteps, with h_{-1} = h0: step u's h is hs[u] and its h_{t-1} is hs[u+1]. Two blocks alternate:
  // one is loading while the chain runs through the other.
  struct Block {
    float a[kSteps], v[kSteps], g[kSteps], hs[kSteps + 1];
  };
  const float h0 = p.h0[idx];
  const auto load = [&](int t1, Block& k) {
#pragma unroll
    for (int u = 0; u <= kSteps; ++u) {
      const int t = t1 - u;
      k.hs[u] = t >= 0 ? p.h_hist[st_off + static_cast<int64_t>(t) * p.D] : t == -1 ? h0 : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      const int t = t1 - u;
      const bool in = t >= 0;
      const int64_t row = proj_off + static_cast<int64_t>(in ? t : 0) * 2 * p.D;
      k.a[u] = in ? static_cast<float>(p.proj[row]) : 0.f;
      k.v[u] = in ? static_cast<float>(p.proj[row + p.D]) : 0.f;
      k.g[u] = in && p.dy ? static_cast<float>(p.dy[st_off + static_cast<int64_t>(in ? t : 0) * p.D]) : 0.f;
    }
  };
  float dh = p.dh_T ? p.dh_T[idx] : 0.f;
  const auto run = [&](int t1, const Block& k) {
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      const int t = t1 - u;
      if (t >= 0) {
        const float h = k.hs[u], s = sigmoid(h);
        const float G = dh + k.g[u] * (2.f * h * s + h * h * s * (1.f - s));
        float da, dp;
        dh = Cell::bwd(G, k.hs[u + 1], k.a[u], k.v[u], w, da, dp, dw);
        const int64_t row = proj_off + static_cast<int64_t>(t) * 2 * p.D;
        p.dproj[row] = static_cast<scalar_t>(da);
        p.dproj[row + p.D] = static_cast<scalar_t>(dp);
      }
    }
  };
  Block x, y;
  load(p.T - 1, x);
  for (int t1 = p.T - 1; t1 >= 0; t1 -= 2 * kSteps) {
    load(t1 - kSteps, y);
    run(t1, x);
    load(t1 - 2 * kSteps, x);
    run(t1 - kSteps, y);
  }
  p.dh0[idx] = dh;
#pragma unroll
  for (int i = 0; i < Cell::P; ++i) p.dw_part[static_cast<int64_t>(i) * p.B * p.D + idx] = dw[i];
}

}  // namespace

std::vector<at::Tensor> gated_diag_bwd(int cell, const at::Tensor& proj_in, const at::Tensor& w_in, const at::Tensor& h0_in,
                                       const at::Tensor& h_hist_in, const at::Tensor& dy_in, const at::Tensor& dh_T_in) {
  const c10::cuda::CUDAGuard guard(proj_in.device());
  auto proj = proj_in.contiguous();
  const int64_t B = proj.size(0), T = proj.size(1), D = proj.size(2) / 2;
  auto f32 = proj.options().dtype(at::kFloat);
  auto w = w_in.to(f32).contiguous();
  auto h0 = h0_in.to(f32).contiguous();
  auto h_hist = h_hist_in.contiguous();
  TORCH_CHECK(h_hist.scalar_type() == at::kFloat && h_hist.sizes() == at::IntArrayRef({B, T, D}),
              "gated_diag_bwd: h_hist must be float32 [B,T,D]");
  // Incoming gradients may be undefined (that output did not reach the loss) or non-contiguous.
  at::Tensor dy = dy_in.defined() ? dy_in.to(proj.scalar_type()).contiguous() : at::Tensor();
  at::Tensor dh_T = dh_T_in.defined() ? dh_T_in.to(f32).contiguous() : at::Tensor();
  if (dy.defined()) TORCH_CHECK(dy.sizes() == at::IntArrayRef({B, T, D}), "gated_diag_bwd: dy must be [B,T,D]");
  if (dh_T.defined()) TORCH_CHECK(dh_T.sizes() == at::IntArrayRef({B, D}), "gated_diag_bwd: dh_T must be [B,D]");

  const int64_t P = w.size(0);
  auto dproj = ops::empty_output({B, T, 2 * D}, proj.options());
  auto dw_part = ops::empty_output({P, B, D}, f32);
  auto dh0 = ops::empty_output({B, D}, f32);
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_diag_cell(cell, [&](auto cell_tag) {
    using Cell = decltype(cell_tag);
    TORCH_CHECK(P == Cell::P, "gated_diag_bwd: this cell takes ", Cell::P, " parameter rows, got ", P);
    ELMAN_DISPATCH_FLOAT_BF16(proj.scalar_type(), "gated_diag_bwd", [&] {
      BwdParams<scalar_t> p{proj.data_ptr<scalar_t>(),
                            w.data_ptr<float>(),
                            h0.data_ptr<float>(),
                            h_hist.data_ptr<float>(),
                            dy.defined() ? dy.data_ptr<scalar_t>() : nullptr,
                            dh_T.defined() ? dh_T.data_ptr<float>() : nullptr,
                            dproj.data_ptr<scalar_t>(),
                            dw_part.data_ptr<float>(),
                            dh0.data_ptr<float>(),
                            int(B), int(T), int(D)};
      gated_diag_bwd_kernel<Cell, scalar_t><<<blocks_for(B * D, kThreads), kThreads, 0, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {dproj, dw_part.sum(1), dh0};
}

}  // namespace elman::cuda
