/* E87 sparse-block scan, forward: one launch walks all T for every (batch, memory block).
 *
 *   khat = k / (||k|| + 1e-6), beta = sigmoid(b~ + b_beta), r = S khat,
 *   P = tanh(diag(beta) S + (v - r) khat^T), S <- S + w (P - S), u = S q, yb = u^2 sigmoid(u)
 *
 * Grid: one block per (batch b, memory block j), B * B_k blocks; layout, padding and staging as delta_matrix's
 * forward (delta_matrix.cuh): per segment of K steps the state goes to ckpt (fp32), the block stages the
 * segment's k, v, q, beta and w (loaded into registers during the previous segment; two __syncthreads), issues
 * the next segment's loads, every warp walks the K steps on its own rows with no block-wide sync, then u is
 * written out as yb after one more __syncthreads. The routing (w, rho) and the aggregation sum_j rho_j yb_j are
 * LibTorch ops in ops/sparse_block.
 * Numerics: fp32 state and arithmetic, precise expf/tanhf; scan_proj and yb in float32 or bfloat16.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/sparse_block/sparse_block.cuh"
#include "cuda/sparse_block/sparse_block.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
using namespace sparse;

template <class L, typename scalar_t>
__global__ void __launch_bounds__(L::kThreads) sparse_block_fwd_kernel(const ScanParams<scalar_t> p) {
  constexpr int NP = L::NP, J = L::J, K = L::K;
  __shared__ __align__(16) Stage<L> st;
  __shared__ float u_s[K][NP];
  __shared__ float w_s[K];
  const int b = blockIdx.x / p.H, h = blockIdx.x - b * p.H, n = p.n;
  const int lane = threadIdx.x % 32, row = (threadIdx.x / 32) * L::RW + lane / L::TPR, c0 = (lane % L::TPR) * J;
  const bool row_in = row < n;
  const int64_t sbase = (static_cast<int64_t>(blockIdx.x) * n + row) * n;  // S[b,h,row,:]
  float S[J];
#pragma unroll
  for (int j = 0; j < J; ++j) S[j] = row_in && c0 + j < n ? p.S0[sbase + c0 + j] : 0.f;

  delta::Prefetch<L, scalar_t> pf;
  WeightPrefetch<L> wf;
  pf.load(p, b, h, 0, min(K, p.T));
  wf.load(p, b, h, 0, min(K, p.T));
  for (int seg = 0; seg < p.nseg; ++seg) {
    const int t0 = seg * K, len = min(K, p.T - t0);
    float* ck = p.ckpt + ((static_cast<int64_t>(blockIdx.x) * p.nseg + seg) * NP + row) * NP + c0;
#pragma unroll
    for (int j = 0; j < J; ++j) ck[j] = S[j];
    pf.store(p, h, st);  // the previous segment's step loop is done with st and w_s (__syncthreads below)
    wf.store(w_s);
    __syncthreads();
    delta::normalize_keys<L>(st, len);
    __syncthreads();
    if (seg + 1 < p.nseg) {  // in flight during the steps
      pf.load(p, b, h, t0 + K, min(K, p.T - t0 - K));
      wf.load(p, b, h, t0 + K, min(K, p.T - t0 - K));
    }
#pragma unroll 4
    for (int s = 0; s < len; ++s) {
      float d;
      const float u = mix_step_forward<L>(S, st, w_s[s], s, row, c0, d);
      if (lane % L::TPR == 0) u_s[s][row] = u;
    }
    __syncthreads();
    // u_s is next written after the next segment's two __syncthreads, so this pass needs no barrier after it.
    for (int idx = threadIdx.x; idx < len * n; idx += L::kThreads) {
      const int s = idx / n, i = idx - s * n;
      const float u = u_s[s][i];
      p.y[((static_cast<int64_t>(b) * p.T + t0 + s) * p.H + h) * n + i] =
          static_cast<scalar_t>(u * u * sigmoid(u));
    }
  }
#pragma unroll
  for (int j = 0; j < J; ++j)
    if (row_in && c0 + j < n) p.S_T[sbase + c0 + j] = S[j];
}

}  // namespace

std::vector<at::Tensor> sparse_block_fwd(const at::Tensor& proj_in, const at::Tensor& b_beta_in, const at::Tensor& w_in,
                                         const at::Tensor& S0_in, int64_t blocks, int64_t n) {
  TORCH_CHECK(proj_in.dim() == 3, "sparse_block_fwd: scan_proj must be [B,T,B_k*4n], got ", proj_in.sizes());
  TORCH_CHECK(proj_in.scalar_type() == at::kFloat || proj_in.scalar_type() == at::kBFloat16,
              "sparse_block: the CUDA kernel takes float32 or bfloat16 proj, got ", proj_in.scalar_type(),
              "; use the reference implementation for other dtypes");
  const c10::cuda::CUDAGuard guard(proj_in.device());
  auto proj = proj_in.contiguous();
  const int64_t B = proj.size(0), T = proj.size(1), H = blocks;
  TORCH_CHECK(proj.size(2) == H * 4 * n, "sparse_block_fwd: scan_proj must be [B,T,", H * 4 * n, "], got ",
              proj.sizes());
  TORCH_CHECK(B * H < (int64_t(1) << 31) && B * T * H * 4 * n < (int64_t(1) << 62) && T < (int64_t(1) << 30),
              "sparse_block_fwd: input too large ", proj.sizes());
  auto f32 = proj.options().dtype(at::kFloat);
  auto b_beta = b_beta_in.to(f32).contiguous();
  auto w = w_in.to(f32).contiguous();
  auto S0 = S0_in.to(f32).contiguous();
  TORCH_CHECK(b_beta.sizes() == at::IntArrayRef({H, n}), "sparse_block_fwd: b_beta must be [B_k,n]");
  TORCH_CHECK(w.sizes() == at::IntArrayRef({B, T, H}), "sparse_block_fwd: w must be [B,T,B_k], got ", w.sizes());
  TORCH_CHECK(S0.sizes() == at::IntArrayRef({B, H, n, n}), "sparse_block_fwd: S0 must be [B,B_k,n,n], got ",
              S0.sizes());
  ELMAN_CHECK_CUDA_TENSOR(proj);
  ELMAN_CHECK_CUDA_TENSOR(b_beta);
  ELMAN_CHECK_CUDA_TENSOR(w);
  ELMAN_CHECK_CUDA_TENSOR(S0);
  int64_t NP, K, nseg;
  delta::segment_geometry(n, T, NP, K, nseg);

  auto y = ops::empty_output({B, T, H * n}, proj.options());
  auto S_T = ops::empty_output({B, H, n, n}, f32);
  auto ckpt = ops::empty_output({B * H, nseg, NP, NP}, f32);
  auto run = [&](auto tag) {
    using scalar_t = decltype(tag);
    ScanParams<scalar_t> p{};
    p.proj = proj.data_ptr<scalar_t>();
    p.b_beta = b_beta.data_ptr<float>();
    p.S0 = S0.data_ptr<float>();
    p.ckpt = ckpt.data_ptr<float>();
    p.y = y.data_ptr<scalar_t>();
    p.S_T = S_T.data_ptr<float>();
    p.w = w.data_ptr<float>();
    p.B = int(B), p.T = int(T), p.H = int(H), p.n = int(n), p.nseg = int(nseg), p.gated = true;
    delta::dispatch_layout(n, [&](auto layout) {
      using L = decltype(layout);
      sparse_block_fwd_kernel<L, scalar_t><<<p.B * p.H, L::kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  };
  if (proj.scalar_type() == at::kBFloat16) run(c10::BFloat16{});
  else run(float{});
  return {y, S_T, ckpt};
}

}  // namespace elman::cuda
