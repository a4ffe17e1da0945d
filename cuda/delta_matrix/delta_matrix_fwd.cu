/* Delta-rule matrix-state cells (E75 multi-head, E74 full matrix), forward: one launch walks all T.
 *
 *   khat = k / (||k|| + 1e-6), beta = sigmoid(b~ + b_beta) (1 when ungated), r = S khat,
 *   S_t = tanh(diag(beta) S_{t-1} + (v - r) khat^T), u = S_t q, y_t = u^2 sigmoid(u)
 *
 * Grid: one block per (batch b, head h); thread layout, padding and staging in delta_matrix.cuh. Per segment
 * of K steps: the state at the segment start goes to ckpt (fp32, NP x NP), the block stages the segment's
 * inputs (loaded into registers during the previous segment; two __syncthreads), issues the next segment's
 * loads, every warp walks the K steps on its own rows with no block-wide sync (per step
 * and thread: J FMAs + log2(TPR) shuffles for r, J tanh and FMAs, J FMAs + log2(TPR) shuffles for u), then
 * u is written out as y after one more __syncthreads.
 * Saved for backward (by ops/delta_matrix): ckpt.
 * Numerics: fp32 state and arithmetic, precise expf/tanhf; proj and y in float32 or bfloat16.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/delta_matrix/delta_matrix.cuh"
#include "cuda/delta_matrix/delta_matrix.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
using namespace delta;

template <class L, typename scalar_t>
__global__ void __launch_bounds__(L::kThreads) delta_matrix_fwd_kernel(const Params<scalar_t> p) {
  constexpr int NP = L::NP, J = L::J, K = L::K;
  __shared__ __align__(16) Stage<L> st;
  __shared__ float u_s[K][NP];
  const int b = blockIdx.x / p.H, h = blockIdx.x - b * p.H, n = p.n;
  const int lane = threadIdx.x % 32, row = (threadIdx.x / 32) * L::RW + lane / L::TPR, c0 = (lane % L::TPR) * J;
  const bool row_in = row < n;
  const int64_t sbase = (static_cast<int64_t>(blockIdx.x) * n + row) * n;  // S[b,h,row,:]
  float S[J];
#pragma unroll
  for (int j = 0; j < J; ++j) S[j] = row_in && c0 + j < n ? p.S0[sbase + c0 + j] : 0.f;

  Prefetch<L, scalar_t> pf;
  pf.load(p, b, h, 0, min(K, p.T));
  for (int seg = 0; seg < p.nseg; ++seg) {
    const int t0 = seg * K, len = min(K, p.T - t0);
    float* ck = p.ckpt + ((static_cast<int64_t>(blockIdx.x) * p.nseg + seg) * NP + row) * NP + c0;
#pragma unroll
    for (int j = 0; j < J; ++j) ck[j] = S[j];
    pf.store(p, h, st);  // the previous segment's step loop is done with st (__syncthreads below)
    __syncthreads();
    normalize_keys<L>(st, len);
    __syncthreads();
    if (seg + 1 < p.nseg) pf.load(p, b, h, t0 + K, min(K, p.T - t0 - K));  // in flight during the steps
#pragma unroll 4  // lets the next steps' shared-memory loads issue ahead of this step's shuffle chain
    for (int s = 0; s < len; ++s) {
      float d;
      const float u = step_forward<L>(S, st, s, row, c0, d);
      if (lane % L::TPR == 0) u_s[s][row] = u;
    }
    __syncthreads();
    // u_s is next written after the next segment's two __syncthreads, so this pass needs no barrier after it.
    for (int idx = threadIdx.x; idx < len * n; idx += L::kThreads) {
      const int s = idx / n, i = idx - s * n;
      const float u = u_s[s][i];
      p.y[((static_cast<int64_t>(b) * p.T + t0 + s) * p.H + h) * n + i] = static_cast<scalar_t>(u * u * sigmoid(u));
    }
  }
#pragma unroll
  for (int j = 0; j < J; ++j)
    if (row_in && c0 + j < n) p.S_T[sbase + c0 + j] = S[j];
}

template <typename scalar_t>
void launch_fwd(const Params<scalar_t>& p, int64_t n) {
  dispatch_layout(n, [&](auto layout) {
    using L = decltype(layout);
    delta_matrix_fwd_kernel<L, scalar_t>
        <<<p.B * p.H, L::kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

std::vector<at::Tensor> delta_matrix_fwd(const at::Tensor& proj_in, const at::Tensor& b_beta_in, const at::Tensor& S0_in,
                                         int64_t heads, int64_t n) {
  TORCH_CHECK(proj_in.dim() == 3, "delta_matrix_fwd: proj must be [B,T,H*P*n], got ", proj_in.sizes());
  TORCH_CHECK(proj_in.scalar_type() == at::kFloat || proj_in.scalar_type() == at::kBFloat16,
              "delta_matrix: the CUDA kernel takes float32 or bfloat16 proj, got ", proj_in.scalar_type(),
              "; use the reference implementation for other dtypes");
  const c10::cuda::CUDAGuard guard(proj_in.device());
  const bool gated = b_beta_in.defined();
  auto proj = proj_in.contiguous();
  const int64_t B = proj.size(0), T = proj.size(1), H = heads, P = gated ? 4 : 3;
  TORCH_CHECK(proj.size(2) == H * P * n, "delta_matrix_fwd: proj must be [B,T,", H * P * n, "], got ", proj.sizes());
  TORCH_CHECK(B * H < (int64_t(1) << 31) && B * T * H * P * n < (int64_t(1) << 62) && T < (int64_t(1) << 30),
              "delta_matrix_fwd: input too large ", proj.sizes());
  auto f32 = proj.options().dtype(at::kFloat);
  at::Tensor b_beta = gated ? b_beta_in.to(f32).contiguous() : at::Tensor();
  auto S0 = S0_in.to(f32).contiguous();
  TORCH_CHECK(S0.sizes() == at::IntArrayRef({B, H, n, n}), "delta_matrix_fwd: S0 must be [B,H,n,n], got ", S0.sizes());
  ELMAN_CHECK_CUDA_TENSOR(proj);
  ELMAN_CHECK_CUDA_TENSOR(S0);
  if (gated) ELMAN_CHECK_CUDA_TENSOR(b_beta);
  int64_t NP, K, nseg;
  segment_geometry(n, T, NP, K, nseg);

  auto y = ops::empty_output({B, T, H * n}, proj.options());
  auto S_T = ops::empty_output({B, H, n, n}, f32);
  auto ckpt = ops::empty_output({B * H, nseg, NP, NP}, f32);
  auto run = [&](auto tag) {
    using scalar_t = decltype(tag);
    Params<scalar_t> p{};
    p.proj = proj.data_ptr<scalar_t>();
    p.b_beta = gated ? b_beta.data_ptr<float>() : nullptr;
    p.S0 = S0.data_ptr<float>();
    p.ckpt = ckpt.data_ptr<float>();
    p.y = y.data_ptr<scalar_t>();
    p.S_T = S_T.data_ptr<float>();
    p.B = int(B), p.T = int(T), p.H = int(H), p.n = int(n), p.nseg = int(nseg), p.gated = gated;
    launch_fwd(p, n);
  };
  if (proj.scalar_type() == at::kBFloat16) run(c10::BFloat16{});
  else run(float{});
  return {y, S_T, ckpt};
}

}  // namespace elman::cuda
