/* E61 decay-gated Elman, forward (spec section 2.5).
 *
 *   alpha_t = sigmoid(a_t + b_alpha)   v_t = p_t + b_v          ([a_t, p_t] = proj[b, t, :])
 *   h_t = alpha_t * h_{t-1} + (1 - alpha_t) * v_t               y_t = h_t^2 * sigmoid(h_t)
 *
 * Shapes (rightmost dimension fastest): B batch, T time, D state width.
 *   proj [B,T,2D]  y [B,T,D]  h_hist [B,T,D] (f32)  h0, h_T [B,D] (f32)  b_alpha, b_v [D] (f32)
 * One thread owns one (b, d) channel and walks all T in one launch with h in an fp32 register.
 * Loads for the next STEPS time steps are issued before the recurrence consumes them, so memory
 * latency overlaps the sequential chain. Saved for backward: the fp32 state history h_hist.
 * Numerics: fp32 arithmetic; proj/y in float32 or bfloat16.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/e61/e61.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {

constexpr int kThreads = 64;
constexpr int kSteps = 8;

template <typename scalar_t>
struct E61FwdParams {
  const scalar_t* proj;    // [B,T,2D]
  const float* b_alpha;    // [D]
  const float* b_v;        // [D]
  const float* h0;         // [B,D]
  scalar_t* y;             // [B,T,D]
  float* h_hist;           // [B,T,D]
  float* h_T;              // [B,D]
  int B, T, D;
};

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) e61_fwd_kernel(const E61FwdParams<scalar_t> p) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= p.B * p.D) return;
  const int b = idx / p.D, d = idx % p.D;
  const float ba = p.b_alpha[d], bv = p.b_v[d];
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
        const float alpha = 1.f / (1.f + __expf(-(a[u] + ba)));
        h = alpha * h + (1.f - alpha) * (v[u] + bv);
        const float sg = 1.f / (1.f + __expf(-h));
        const int64_t o = out_off + static_cast<int64_t>(t0 + u) * p.D;
        p.y[o] = static_cast<scalar_t>(h * h * sg);
        p.h_hist[o] = h;
      }
    }
  }
  p.h_T[idx] = h;
}

}  // namespace

std::vector<at::Tensor> e61_fwd(const at::Tensor& proj_in, const at::Tensor& b_alpha_in, const at::Tensor& b_v_in,
                                const at::Tensor& h0_in) {
  TORCH_CHECK(proj_in.dim() == 3 && proj_in.size(2) % 2 == 0, "e61_fwd: proj must be [B,T,2D], got ", proj_in.sizes());
  ELMAN_CHECK_FLOAT_DTYPE(proj_in);
  const c10::cuda::CUDAGuard guard(proj_in.device());
  auto proj = proj_in.contiguous();
  const int64_t B = proj.size(0), T = proj.size(1), D = proj.size(2) / 2;
  TORCH_CHECK(T >= 1 && B >= 1 && D >= 1, "e61_fwd: empty input ", proj.sizes());
  TORCH_CHECK(B * T * 2 * D < (int64_t(1) << 62) && B * D < (int64_t(1) << 31), "e61_fwd: input too large");
  auto f32 = proj.options().dtype(at::kFloat);
  auto b_alpha = b_alpha_in.to(f32).contiguous(), b_v = b_v_in.to(f32).contiguous();
  auto h0 = h0_in.to(f32).contiguous();
  TORCH_CHECK(b_alpha.numel() == D && b_v.numel() == D, "e61_fwd: biases must have D=", D, " elements");
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == B && h0.size(1) == D, "e61_fwd: h0 must be [B,D]=[", B, ",", D,
              "], got ", h0.sizes());
  ELMAN_CHECK_CUDA_TENSOR(b_alpha);
  ELMAN_CHECK_CUDA_TENSOR(h0);

  auto y = ops::empty_output({B, T, D}, proj.options());
  auto h_hist = ops::empty_output({B, T, D}, f32);
  auto h_T = ops::empty_output({B, D}, f32);
  auto stream = at::cuda::getCurrentCUDAStream();
  ELMAN_DISPATCH_FLOAT_BF16(proj.scalar_type(), "e61_fwd", [&] {
    E61FwdParams<scalar_t> p{proj.data_ptr<scalar_t>(), b_alpha.data_ptr<float>(), b_v.data_ptr<float>(),
                             h0.data_ptr<float>(),      y.data_ptr<scalar_t>(),    h_hist.data_ptr<float>(),
                             h_T.data_ptr<float>(),     int(B), int(T), int(D)};
    e61_fwd_kernel<scalar_t><<<blocks_for(B * D, kThreads), kThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, h_hist, h_T};
}

}  // namespace elman::cuda
