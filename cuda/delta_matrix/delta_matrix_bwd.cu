/* Delta-rule matrix-state cells, backward: one launch walks the segments in reverse (recurrence and layout in
 * delta_matrix_fwd.cu and delta_matrix.cuh).
 *
 * Per step t, with S = S_{t-1}, S' = S_t, d = v - r, u = S' q, G = dL/dS' (the carried gradient dS plus the
 * output's), all row-local except the two column sums:
 *   du     = dy (2 u sigma(u) + u^2 sigma(u) (1 - sigma(u)))          (selfgate')
 *   dpre   = (dS + du q^T) * (1 - S'^2)                               (elementwise; tanh')
 *   dd_i   = sum_j dpre_ij khat_j  -> dv = dd, dr = -dd
 *   dbeta_i = sum_j dpre_ij S_ij   -> db~ = dbeta beta (1 - beta)        (gated only)
 *   dS     = diag(beta) dpre - dd khat^T                              (carried to step t-1, fp32)
 *   dkhat_j = sum_i (dpre_ij d_i - S_ij dd_i),  dq_j = sum_i du_i S'_ij  (column sums)
 *   dk     = dkhat / (||k|| + eps) - khat (khat . dkhat) / ||k||      (0 for the second term when k = 0)
 * The walk starts from dS = dS_T, so gradient flows from the final state, and ends with dS0.
 *
 * Per segment of K steps (last to first): stage the inputs and dy and take the fp32 checkpoint S_{t0} (all three
 * loaded into registers while the previous segment ran; the next segment's loads are issued now); recompute
 * the K states once, keeping all of them in registers (K + 1 arrays of J floats per thread, loops fully
 * unrolled) with d and du per step; walk the K steps backwards as above (no block-wide sync: each warp owns its
 * rows; column sums are reduce-scattered by xor shuffles into per-warp shared-memory partials, deterministic); then one
 * __syncthreads and a pass (one warp per step) that sums the warps' partials, applies the L2-norm backward and
 * writes dproj = [dk | dv | dq (| db~)] in proj's dtype. Recompute is O(T) in total (each step once).
 * db_beta: per-(b, h) fp32 sums of db~ over T, summed over B on the host.
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

template <class L>
struct BwdSmem {
  Stage<L> st;
  float dy[L::K][L::NP];
  float dv[L::K][L::NP];
  float dbt[L::K][L::NP];              // d b~
  float pkh[L::NW][L::K][L::NP];       // per-warp partial column sums of dkhat
  float pq[L::NW][L::K][L::NP];        // per-warp partial column sums of dq
};

template <class L, typename scalar_t>
__global__ void __launch_bounds__(L::kThreads) delta_matrix_bwd_kernel(const Params<scalar_t> p) {
  constexpr int NP = L::NP, J = L::J, K = L::K, TPR = L::TPR, RW = L::RW, NW = L::NW;
  extern __shared__ float4 smem4[];
  BwdSmem<L>& sm = *reinterpret_cast<BwdSmem<L>*>(smem4);
  Stage<L>& st = sm.st;
  const int b = blockIdx.x / p.H, h = blockIdx.x - b * p.H, n = p.n;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, rw = lane / TPR, tl = lane % TPR;
  const int row = warp * RW + rw, c0 = tl * J;
  const bool row_in = row < n;
  const int64_t sbase = (static_cast<int64_t>(blockIdx.x) * n + row) * n;  // [b,h,row,:] of S0 / S_T
  float dS[J];
#pragma unroll
  for (int j = 0; j < J; ++j) dS[j] = p.dS_T && row_in && c0 + j < n ? p.dS_T[sbase + c0 + j] : 0.f;
  float dbb = 0.f;  // sum over t of d b~ for this row (lanes tl == 0)

  // Segment seg's inputs, dy and checkpoint are loaded into registers while segment seg + 1 runs.
  Prefetch<L, scalar_t> pf;
  constexpr int M = Prefetch<L, scalar_t>::M;
  scalar_t dyr[M];
  float ckr[J];
  auto prefetch = [&](int seg) {
    const int t0 = seg * K, len = min(K, p.T - t0);
    pf.load(p, b, h, t0, len);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int idx = threadIdx.x + m * L::kThreads, s = idx / NP, i = idx - s * NP;
      dyr[m] = p.dy && idx < K * NP && s < len && i < n
                   ? p.dy[((static_cast<int64_t>(b) * p.T + t0 + s) * p.H + h) * n + i]
                   : scalar_t(0.f);
    }
    const float* ck = p.ckpt + ((static_cast<int64_t>(blockIdx.x) * p.nseg + seg) * NP + row) * NP + c0;
#pragma unroll
    for (int j = 0; j < J; ++j) ckr[j] = ck[j];
  };
  prefetch(p.nseg - 1);

  for (int seg = p.nseg - 1; seg >= 0; --seg) {
    const int t0 = seg * K, len = min(K, p.T - t0);
    __syncthreads();  // the previous segment's output pass is done with shared memory
    pf.store(p, h, st);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int idx = threadIdx.x + m * L::kThreads, s = idx / NP, i = idx - s * NP;
      if (idx < K * NP) sm.dy[s][i] = static_cast<float>(dyr[m]);
    }
    float Sg[K + 1][J], dr[K], dur[K];  // Sg[s] = S_{t0+s}, recomputed from the checkpoint
#pragma unroll
    for (int j = 0; j < J; ++j) Sg[0][j] = ckr[j];
    __syncthreads();
    normalize_keys<L>(st, len);
    __syncthreads();
    if (seg > 0) prefetch(seg - 1);  // in flight during this segment

    // Recompute the segment's states.
#pragma unroll
    for (int s = 0; s < K; ++s) {
      if (s < len) {
#pragma unroll
        for (int j = 0; j < J; ++j) Sg[s + 1][j] = Sg[s][j];
        const float u = step_forward<L>(Sg[s + 1], st, s, row, c0, dr[s]);
        const float sg = sigmoid(u);
        dur[s] = sm.dy[s][row] * (u * sg * (2.f + u * (1.f - sg)));
      }
    }

    // Walk the segment backwards.
#pragma unroll
    for (int s = K - 1; s >= 0; --s) {
      if (s < len) {
        float kh[J], q[J], dpre[J];
        load_cols<J>(&st.kh[s][c0], kh);
        load_cols<J>(&st.q[s][c0], q);
        const float be = st.be[s][row], d = dr[s], du = dur[s];
        float dd = 0.f, db = 0.f;
#pragma unroll
        for (int j = 0; j < J; ++j) {
          const float sn = Sg[s + 1][j];
          dpre[j] = fmaf(du, q[j], dS[j]) * (1.f - sn * sn);
          dd = fmaf(dpre[j], kh[j], dd);
          db = fmaf(dpre[j], Sg[s][j], db);
        }
        dd = group_sum<TPR>(dd);
#pragma unroll
        for (int j = 0; j < J; ++j) dS[j] = fmaf(dpre[j], be, -dd * kh[j]);
        if (p.gated) db = group_sum<TPR>(db);
        float ca[J], cb[J];
#pragma unroll
        for (int j = 0; j < J; ++j) ca[j] = fmaf(dpre[j], d, -Sg[s][j] * dd), cb[j] = du * Sg[s + 1][j];
        int base = 0, base_b = 0;
        column_sum<TPR, J, J>(ca, lane, base);
        column_sum<TPR, J, J>(cb, lane, base_b);
#pragma unroll
        for (int i = 0; i < column_sum_count<TPR, J>(); ++i)
          sm.pkh[warp][s][c0 + base + i] = ca[i], sm.pq[warp][s][c0 + base + i] = cb[i];
        if (tl == 0) {
          const float dbt = db * be * (1.f - be);
          sm.dv[s][row] = dd, sm.dbt[s][row] = dbt;
          dbb += dbt;
        }
      }
    }
    __syncthreads();

    // Outputs of the segment, one warp per step: dk (through the L2 norm), dv, dq, db~.
    for (int s = warp; s < len; s += NW) {
      float dkh[2] = {0.f, 0.f}, dq[2] = {0.f, 0.f}, khv[2] = {0.f, 0.f};
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int j = lane + 32 * e;
        if (j < NP) {
#pragma unroll
          for (int w = 0; w < NW; ++w) dkh[e] += sm.pkh[w][s][j], dq[e] += sm.pq[w][s][j];
          khv[e] = st.kh[s][j];
        }
      }
      const float dot = group_sum<32>(khv[0] * dkh[0] + khv[1] * dkh[1]), nk = st.nk[s];
      scalar_t* dst = p.dproj + proj_offset(p, b, t0 + s, h);
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int j = lane + 32 * e;
        if (j < n) {
          const float dk = dkh[e] / (nk + 1e-6f) - (nk > 0.f ? khv[e] * dot / nk : 0.f);
          dst[j] = static_cast<scalar_t>(dk);
          dst[n + j] = static_cast<scalar_t>(sm.dv[s][j]);
          dst[2 * n + j] = static_cast<scalar_t>(dq[e]);
          if (p.gated) dst[3 * n + j] = static_cast<scalar_t>(sm.dbt[s][j]);
        }
      }
    }
  }
#pragma unroll
  for (int j = 0; j < J; ++j)
    if (row_in && c0 + j < n) p.dS0[sbase + c0 + j] = dS[j];
  if (p.gated && tl == 0 && row_in) p.db_part[static_cast<int64_t>(blockIdx.x) * n + row] = dbb;
}

template <typename scalar_t>
void launch_bwd(const Params<scalar_t>& p, int64_t n) {
  dispatch_layout(n, [&](auto layout) {
    using L = decltype(layout);
    auto kernel = delta_matrix_bwd_kernel<L, scalar_t>;
    constexpr int smem = sizeof(BwdSmem<L>);
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<p.B * p.H, L::kThreads, smem, at::cuda::getCurrentCUDAStream()>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

std::vector<at::Tensor> delta_matrix_bwd(const at::Tensor& proj_in, const at::Tensor& b_beta_in, const at::Tensor& ckpt_in,
                                         const at::Tensor& dy_in, const at::Tensor& dS_T_in, int64_t heads, int64_t n) {
  const c10::cuda::CUDAGuard guard(proj_in.device());
  const bool gated = b_beta_in.defined();
  auto proj = proj_in.contiguous();
  const int64_t B = proj.size(0), T = proj.size(1), H = heads, P = gated ? 4 : 3;
  TORCH_CHECK(proj.size(2) == H * P * n, "delta_matrix_bwd: proj must be [B,T,", H * P * n, "], got ", proj.sizes());
  auto f32 = proj.options().dtype(at::kFloat);
  at::Tensor b_beta = gated ? b_beta_in.to(f32).contiguous() : at::Tensor();
  int64_t NP, K, nseg;
  segment_geometry(n, T, NP, K, nseg);
  auto ckpt = ckpt_in.contiguous();
  TORCH_CHECK(ckpt.scalar_type() == at::kFloat && ckpt.sizes() == at::IntArrayRef({B * H, nseg, NP, NP}),
              "delta_matrix_bwd: ckpt must be float32 [B*H, nseg, NP, NP] from delta_matrix_fwd");
  // Incoming gradients may be undefined (that output did not reach the loss) or non-contiguous.
  at::Tensor dy = dy_in.defined() ? dy_in.to(proj.scalar_type()).contiguous() : at::Tensor();
  at::Tensor dS_T = dS_T_in.defined() ? dS_T_in.to(f32).contiguous() : at::Tensor();
  if (dy.defined()) TORCH_CHECK(dy.sizes() == at::IntArrayRef({B, T, H * n}), "delta_matrix_bwd: dy must be [B,T,H*n]");
  if (dS_T.defined())
    TORCH_CHECK(dS_T.sizes() == at::IntArrayRef({B, H, n, n}), "delta_matrix_bwd: dS_T must be [B,H,n,n]");

  auto dproj = ops::empty_output({B, T, H * P * n}, proj.options());
  auto dS0 = ops::empty_output({B, H, n, n}, f32);
  at::Tensor db_part = gated ? ops::empty_output({B, H, n}, f32) : at::Tensor();
  auto run = [&](auto tag) {
    using scalar_t = decltype(tag);
    Params<scalar_t> p{};
    p.proj = proj.data_ptr<scalar_t>();
    p.b_beta = gated ? b_beta.data_ptr<float>() : nullptr;
    p.ckpt = ckpt.data_ptr<float>();
    p.dy = dy.defined() ? dy.data_ptr<scalar_t>() : nullptr;
    p.dS_T = dS_T.defined() ? dS_T.data_ptr<float>() : nullptr;
    p.dproj = dproj.data_ptr<scalar_t>();
    p.db_part = gated ? db_part.data_ptr<float>() : nullptr;
    p.dS0 = dS0.data_ptr<float>();
    p.B = int(B), p.T = int(T), p.H = int(H), p.n = int(n), p.nseg = int(nseg), p.gated = gated;
    launch_bwd(p, n);
  };
  if (proj.scalar_type() == at::kBFloat16) run(c10::BFloat16{});
  else run(float{});
  return {dproj, gated ? db_part.sum(0) : at::Tensor(), dS0};
}

}  // namespace elman::cuda
