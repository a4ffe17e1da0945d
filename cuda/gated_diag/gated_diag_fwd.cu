/* Gated-diagonal Elman cells, forward (recurrences in ops/gated_diag/cells.h, device math in cells.cuh).
 *
 *   h_t = Cell::fwd(h_{t-1}, a_t, p_t, w)         y_t = h_t^2 * sigmoid(h_t)       ([a_t, p_t] = proj[b, t, :])
 *
 * Shapes (rightmost dimension fastest): B batch, T time, D state width, P per-channel parameters.
 *   proj [B,T,2D]  y [B,T,D]  h_hist [B,T,D] (f32)  h0, h_T [B,D] (f32)  w [P,D] (f32)
 * One thread owns one (b, d) channel and walks all T in one launch with h in an fp32 register. Loads for
 * the next kSteps time steps are issued before the recurrence consumes them, so memory latency overlaps
 * the sequential chain. Saved for backward: the fp32 state history h_hist.
 * Numerics: fp32 arithmetic with precise expf/tanhf; proj and y in float32 or bfloat16.
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
struct FwdParams {
  const scalar_t* proj;  // [B,T,2D]
  const float* w;        // [P,D]
  const float* h0;       // [B,D]
  scalar_t* y;           // [B,T,D]
  float* h_hist;         // [B,T,D]
  float* h_T;            // [B,D]
  int B, T, D;
};

template <typename Cell, typename scalar_t>
__global__ void __launch_bounds__(kThreads) gated_diag_fwd_kernel(const FwdParams<scalar_t> p) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= p.B * p.D) return;
  const int b = idx / p.D, d = idx % p.D;
  ParamRegs<Cell> w;
#pragma unroll
  for (int i = 0; i < Cell::P; ++i) w[i] = p.w[i * p.D + d];
  const scalar_t* proj = p.proj + static_cast<int64_t>(b) * p.T * 2 * p.D + d;
  const int64_t out_off = static_cast<int64_t>(b) * p.T * p.D + d;
  float h = p.h0[idx];
  for (int t0 = 0; t0 < p.T; t0 += kSteps) {
    float a[kSteps], v[kSteps];
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      if (t0 + u < p.T) {
        const int64_t row = static_cast<int64_t>(t0 + u) * 2 * p.D;
        a[u] = static_cast<float>(proj[row]);
        v[u] = static_cast<float>(proj[row + p.D]);
      }
    }
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      if (t0 + u < p.T) {
        h = Cell::fwd(h, a[u], v[u], w);
        const int64_t o = out_off + static_cast<int64_t>(t0 + u) * p.D;
        p.y[o] = static_cast<scalar_t>(h * h * sigmoid(h));
        p.h_hist[o] = h;
      }
    }
  }
  p.h_T[idx] = h;
}

}  // namespace

std::vector<at::Tensor> gated_diag_fwd(int cell, const at::Tensor& proj_in, const at::Tensor& w_in, const at::Tensor& h0_in) {
  TORCH_CHECK(proj_in.dim() == 3 && proj_in.size(2) % 2 == 0, "gated_diag_fwd: proj must be [B,T,2D], got ", proj_in.sizes());
  ELMAN_CHECK_FLOAT_DTYPE(proj_in);
  const c10::cuda::CUDAGuard guard(proj_in.device());
  auto proj = proj_in.contiguous();
  const int64_t B = proj.size(0), T = proj.size(1), D = proj.size(2) / 2;
  TORCH_CHECK(T >= 1 && B >= 1 && D >= 1, "gated_diag_fwd: empty input ", proj.sizes());
  TORCH_CHECK(B * D < (int64_t(1) << 31), "gated_diag_fwd: B*D too large");
  auto f32 = proj.options().dtype(at::kFloat);
  auto w = w_in.to(f32).contiguous();
  auto h0 = h0_in.to(f32).contiguous();
  TORCH_CHECK(w.dim() == 2 && w.size(1) == D, "gated_diag_fwd: w must be [P,", D, "], got ", w.sizes());
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == B && h0.size(1) == D, "gated_diag_fwd: h0 must be [", B, ",", D, "], got ", h0.sizes());
  ELMAN_CHECK_CUDA_TENSOR(w);
  ELMAN_CHECK_CUDA_TENSOR(h0);

  auto y = ops::empty_output({B, T, D}, proj.options());
  auto h_hist = ops::empty_output({B, T, D}, f32);
  auto h_T = ops::empty_output({B, D}, f32);
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_diag_cell(cell, [&](auto cell_tag) {
    using Cell = decltype(cell_tag);
    TORCH_CHECK(w.size(0) == Cell::P, "gated_diag_fwd: this cell takes ", Cell::P, " parameter rows, got ", w.size(0));
    ELMAN_DISPATCH_FLOAT_BF16(proj.scalar_type(), "gated_diag_fwd", [&] {
      FwdParams<scalar_t> p{proj.data_ptr<scalar_t>(), w.data_ptr<float>(), h0.data_ptr<float>(), y.data_ptr<scalar_t>(),
                            h_hist.data_ptr<float>(),  h_T.data_ptr<float>(), int(B), int(T), int(D)};
      gated_diag_fwd_kernel<Cell, scalar_t><<<blocks_for(B * D, kThreads), kThreads, 0, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {y, h_hist, h_T};
}

}  // namespace elman::cuda
