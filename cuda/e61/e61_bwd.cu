/* E61 decay-gated Elman, backward (full BPTT; recurrence and shapes as in e61_fwd.cu).
 *
 * One thread per (b, d) walks t = T-1 .. 0 carrying dh (fp32), the gradient reaching h_t from later
 * steps; it starts from dh_T, so gradients flow from the final state too.
 *   g      = dh + dy_t * (2 h_t s_t + h_t^2 s_t (1 - s_t))      s_t = sigmoid(h_t)   (selfgate')
 *   da_t   = g * (h_{t-1} - v_t) * alpha_t (1 - alpha_t)         -> dproj[b,t,d]
 *   dv_t   = g * (1 - alpha_t)                                    -> dproj[b,t,D+d]
 *   dh     = g * alpha_t                                          (after t = 0 this is dh0)
 * Bias gradients are summed per thread over T in fp32 and reduced over B on the host side
 * (deterministic: no atomics).
 * Inputs: proj [B,T,2D], b_alpha/b_v [D] f32, h0 [B,D] f32, h_hist [B,T,D] f32, dy [B,T,D] (proj dtype),
 * dh_T [B,D] f32. Outputs: dproj [B,T,2D] (proj dtype), db_alpha/db_v [D] f32, dh0 [B,D] f32.
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
struct E61BwdParams {
  const scalar_t* proj;    // [B,T,2D]
  const float* b_alpha;    // [D]
  const float* b_v;        // [D]
  const float* h0;         // [B,D]
  const float* h_hist;     // [B,T,D]
  const scalar_t* dy;      // [B,T,D] or nullptr (zero)
  const float* dh_T;       // [B,D] or nullptr (zero)
  scalar_t* dproj;         // [B,T,2D]
  float* db_alpha_part;    // [B,D]
  float* db_v_part;        // [B,D]
  float* dh0;              // [B,D]
  int B, T, D;
};

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) e61_bwd_kernel(const E61BwdParams<scalar_t> p) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= p.B * p.D) return;
  const int b = idx / p.D, d = idx % p.D;
  const float ba = p.b_alpha[d], bv = p.b_v[d];
  const int64_t proj_off = static_cast<int64_t>(b) * p.T * 2 * p.D + d;
  const int64_t st_off = static_cast<int64_t>(b) * p.T * p.D + d;
  float dh = p.dh_T ? p.dh_T[idx] : 0.f;
  float dba = 0.f, dbv = 0.f;
  for (int t1 = p.T - 1; t1 >= 0; t1 -= kSteps) {
    // Steps t1, t1-1, ..., t1-kSteps+1 (those >= 0): load everything first, then run the chain.
    float a[kSteps], v[kSteps], h[kSteps], hp[kSteps], g[kSteps];
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      const int t = t1 - u;
      if (t >= 0) {
        const int64_t row = proj_off + static_cast<int64_t>(t) * 2 * p.D;
        a[u] = static_cast<float>(p.proj[row]);
        v[u] = static_cast<float>(p.proj[row + p.D]);
        const int64_t o = st_off + static_cast<int64_t>(t) * p.D;
        h[u] = p.h_hist[o];
        hp[u] = t > 0 ? p.h_hist[o - p.D] : p.h0[idx];
        g[u] = p.dy ? static_cast<float>(p.dy[o]) : 0.f;
      }
    }
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      const int t = t1 - u;
      if (t >= 0) {
        const float s = 1.f / (1.f + __expf(-h[u]));
        const float gt = dh + g[u] * (2.f * h[u] * s + h[u] * h[u] * s * (1.f - s));
        const float alpha = 1.f / (1.f + __expf(-(a[u] + ba)));
        const float da = gt * (hp[u] - (v[u] + bv)) * alpha * (1.f - alpha);
        const float dv = gt * (1.f - alpha);
        dh = gt * alpha;
        const int64_t row = proj_off + static_cast<int64_t>(t) * 2 * p.D;
        p.dproj[row] = static_cast<scalar_t>(da);
        p.dproj[row + p.D] = static_cast<scalar_t>(dv);
        dba += da;
        dbv += dv;
      }
    }
  }
  p.dh0[idx] = dh;
  p.db_alpha_part[idx] = dba;
  p.db_v_part[idx] = dbv;
}

}  // namespace

std::vector<at::Tensor> e61_bwd(const at::Tensor& proj_in, const at::Tensor& b_alpha_in, const at::Tensor& b_v_in,
                                const at::Tensor& h0_in, const at::Tensor& h_hist_in, const at::Tensor& dy_in,
                                const at::Tensor& dh_T_in) {
  const c10::cuda::CUDAGuard guard(proj_in.device());
  auto proj = proj_in.contiguous();
  const int64_t B = proj.size(0), T = proj.size(1), D = proj.size(2) / 2;
  auto f32 = proj.options().dtype(at::kFloat);
  auto b_alpha = b_alpha_in.to(f32).contiguous(), b_v = b_v_in.to(f32).contiguous();
  auto h0 = h0_in.to(f32).contiguous();
  auto h_hist = h_hist_in.contiguous();
  TORCH_CHECK(h_hist.scalar_type() == at::kFloat && h_hist.sizes() == at::IntArrayRef({B, T, D}),
              "e61_bwd: h_hist must be float32 [B,T,D]");
  // Incoming gradients may be undefined (that output did not reach the loss) or non-contiguous.
  at::Tensor dy = dy_in.defined() ? dy_in.to(proj.scalar_type()).contiguous() : at::Tensor();
  at::Tensor dh_T = dh_T_in.defined() ? dh_T_in.to(f32).contiguous() : at::Tensor();
  if (dy.defined()) TORCH_CHECK(dy.sizes() == at::IntArrayRef({B, T, D}), "e61_bwd: dy must be [B,T,D]");
  if (dh_T.defined()) TORCH_CHECK(dh_T.sizes() == at::IntArrayRef({B, D}), "e61_bwd: dh_T must be [B,D]");

  auto dproj = ops::empty_output({B, T, 2 * D}, proj.options());
  auto db_alpha_part = ops::empty_output({B, D}, f32);
  auto db_v_part = ops::empty_output({B, D}, f32);
  auto dh0 = ops::empty_output({B, D}, f32);
  auto stream = at::cuda::getCurrentCUDAStream();
  ELMAN_DISPATCH_FLOAT_BF16(proj.scalar_type(), "e61_bwd", [&] {
    E61BwdParams<scalar_t> p{proj.data_ptr<scalar_t>(),
                             b_alpha.data_ptr<float>(),
                             b_v.data_ptr<float>(),
                             h0.data_ptr<float>(),
                             h_hist.data_ptr<float>(),
                             dy.defined() ? dy.data_ptr<scalar_t>() : nullptr,
                             dh_T.defined() ? dh_T.data_ptr<float>() : nullptr,
                             dproj.data_ptr<scalar_t>(),
                             db_alpha_part.data_ptr<float>(),
                             db_v_part.data_ptr<float>(),
                             dh0.data_ptr<float>(),
                             int(B), int(T), int(D)};
    e61_bwd_kernel<scalar_t><<<blocks_for(B * D, kThreads), kThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dproj, db_alpha_part.sum(0), db_v_part.sum(0), dh0};
}

}  // namespace elman::cuda
