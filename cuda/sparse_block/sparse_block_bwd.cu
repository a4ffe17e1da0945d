/* E87 sparse-block scan, backward: one launch walks the segments in reverse (recurrence in sparse_block_fwd.cu,
 * layout and staging in delta_matrix.cuh; the structure is delta_matrix's backward with the update weight w).
 *
 * Per step t, with S = S_{t-1}, P = tanh(pre), pre = diag(beta) S + d khat^T, d = v - S khat,
 * S' = S + w (P - S), u = S' q, and G = dL/dS' (the carried gradient plus the output's du q^T):
 *   du      = dyb (2 u sigma(u) + u^2 sigma(u) (1 - sigma(u)))         (selfgate')
 *   G       = dS + du q^T
 *   dw      = sum_ij G_ij (P_ij - S_ij)                                 (block sum, per step)
 *   dpre    = w G * (1 - P^2)
 *   dd_i    = sum_j dpre_ij khat_j  -> dv = dd
 *   dbeta_i = sum_j dpre_ij S_ij    -> db~ = dbeta beta (1 - beta)
 *   dS      = (1 - w) G + diag(beta) dpre - dd khat^T                   (carried to step t-1, fp32)
 *   dkhat_j = sum_i (dpre_ij d_i - S_ij dd_i),  dq_j = sum_i du_i S'_ij  (column sums)
 *   dk      = dkhat / (||k|| + eps) - khat (khat . dkhat) / ||k||       (second term 0 when k = 0)
 * The walk starts from dS = dS_T and ends with dS0.
 *
 * Per segment of K steps (last to first): stage the inputs, w and dyb and take the fp32 checkpoint (loaded into
 * registers while the later segment ran); recompute the K states once keeping all of them in registers; walk the
 * K steps backwards as above, recomputing P from S_{t-1} (J tanh per step instead of K x J more registers), with
 * no block-wide sync: row sums by xor shuffles in the row group, column sums (dkhat, dq) reduce-scattered into
 * per-warp shared-memory partials and dw's block sum as one warp sum per step into per-warp partials
 * (deterministic, no atomics); then one __syncthreads and a pass (one warp per step) that adds the partials,
 * applies the L2-norm backward and writes dscan_proj = [dk | dv | dq | db~] and dw.
 * db_beta: per-(b, j) fp32 sums of db~ over T, summed over B on the host.
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
using delta::column_sum;
using delta::column_sum_count;

template <class L>
struct BwdSmem {
  Stage<L> st;
  float w[L::K];
  float dy[L::K][L::NP];
  float dv[L::K][L::NP];
  float dbt[L::K][L::NP];         // d b~
  float pkh[L::NW][L::K][L::NP];  // per-warp partial column sums of dkhat
  float pq[L::NW][L::K][L::NP];   // per-warp partial column sums of dq
  float pw[L::NW][L::K];          // per-warp partial sums of dw
};

template <class L, typename scalar_t>
__global__ void __launch_bounds__(L::kThreads) sparse_block_bwd_kernel(const ScanParams<scalar_t> p) {
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

  // Segment seg's inputs, w, dyb and checkpoint are loaded into registers while segment seg + 1 runs.
  delta::Prefetch<L, scalar_t> pf;
  WeightPrefetch<L> wf;
  constexpr int M = delta::Prefetch<L, scalar_t>::M;
  scalar_t dyr[M];
  float ckr[J];
  auto prefetch = [&](int seg) {
    const int t0 = seg * K, len = min(K, p.T - t0);
    pf.load(p, b, h, t0, len);
    wf.load(p, b, h, t0, len);
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
    wf.store(sm.w);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int idx = threadIdx.x + m * L::kThreads, s = idx / NP, i = idx - s * NP;
      if (idx < K * NP) sm.dy[s][i] = static_cast<float>(dyr[m]);
    }
    float Sg[K + 1][J], dr[K], dur[K];  // Sg[s] = S_{t0+s}, recomputed from the checkpoint
#pragma unroll
    for (int j = 0; j < J; ++j) Sg[0][j] = ckr[j];
    __syncthreads();
    delta::normalize_keys<L>(st, len);
    __syncthreads();
    if (seg > 0) prefetch(seg - 1);  // in flight during this segment

    // Recompute the segment's states.
#pragma unroll
    for (int s = 0; s < K; ++s) {
      if (s < len) {
#pragma unroll
        for (int j = 0; j < J; ++j) Sg[s + 1][j] = Sg[s][j];
        const float u = mix_step_forward<L>(Sg[s + 1], st, sm.w[s], s, row, c0, dr[s]);
        const float sg = sigmoid(u);
        dur[s] = sm.dy[s][row] * (u * sg * (2.f + u * (1.f - sg)));
      }
    }

    // Walk the segment backwards.
#pragma unroll
    for (int s = K - 1; s >= 0; --s) {
      if (s < len) {
        float kh[J], q[J], G[J], dpre[J];
        load_cols<J>(&st.kh[s][c0], kh);
        load_cols<J>(&st.q[s][c0], q);
        const float be = st.be[s][row], d = dr[s], du = dur[s], w = sm.w[s];
        float dd = 0.f, db = 0.f, dw = 0.f;
#pragma unroll
        for (int j = 0; j < J; ++j) {
          const float P = tanhf(fmaf(be, Sg[s][j], d * kh[j]));  // as in mix_step_forward
          G[j] = fmaf(du, q[j], dS[j]);
          dw = fmaf(G[j], P - Sg[s][j], dw);
          dpre[j] = w * G[j] * (1.f - P * P);
          dd = fmaf(dpre[j], kh[j], dd);
          db = fmaf(dpre[j], Sg[s][j], db);
        }
        dd = group_sum<TPR>(dd);
        db = group_sum<TPR>(db);
        dw = group_sum<32>(dw);
#pragma unroll
        for (int j = 0; j < J; ++j) dS[j] = fmaf(1.f - w, G[j], fmaf(dpre[j], be, -dd * kh[j]));
        float ca[J], cb[J];
#pragma unroll
        for (int j = 0; j < J; ++j) ca[j] = fmaf(dpre[j], d, -Sg[s][j] * dd), cb[j] = du * Sg[s + 1][j];
        int base = 0, base_b = 0;
        column_sum<TPR, J, J>(ca, lane, base);
        column_sum<TPR, J, J>(cb, lane, base_b);
#pragma unroll
        for (int i = 0; i < column_sum_count<TPR, J>(); ++i)
          sm.pkh[warp][s][c0 + base + i] = ca[i], sm.pq[warp][s][c0 + base + i] = cb[i];
        if (lane == 0) sm.pw[warp][s] = dw;
        if (tl == 0) {
          const float dbt = db * be * (1.f - be);
          sm.dv[s][row] = dd, sm.dbt[s][row] = dbt;
          dbb += dbt;
        }
      }
    }
    __syncthreads();

    // Outputs of the segment, one warp per step: dk (through the L2 norm), dv, dq, db~, dw.
    for (int s = warp; s < len; s += NW) {
      float dkh[2] = {0.f, 0.f}, dq[2] = {0.f, 0.f}, khv[2] = {0.f, 0.f};
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int j = lane + 32 * e;
        if (j < NP) {
#pragma unroll
          for (int wp = 0; wp < NW; ++wp) dkh[e] += sm.pkh[wp][s][j], dq[e] += sm.pq[wp][s][j];
          khv[e] = st.kh[s][j];
        }
      }
      const float dot = group_sum<32>(khv[0] * dkh[0] + khv[1] * dkh[1]), nk = st.nk[s];
      scalar_t* dst = p.dproj + delta::proj_offset(p, b, t0 + s, h);
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int j = lane + 32 * e;
        if (j < n) {
          const float dk = dkh[e] / (nk + 1e-6f) - (nk > 0.f ? khv[e] * dot / nk : 0.f);
          dst[j] = static_cast<scalar_t>(dk);
          dst[n + j] = static_cast<scalar_t>(sm.dv[s][j]);
          dst[2 * n + j] = static_cast<scalar_t>(dq[e]);
          dst[3 * n + j] = static_cast<scalar_t>(sm.dbt[s][j]);
        }
      }
      if (lane == 0) {
        float dw = 0.f;
#pragma unroll
        for (int wp = 0; wp < NW; ++wp) dw += sm.pw[wp][s];
        p.dw[(static_cast<int64_t>(b) * p.T + t0 + s) * p.H + h] = dw;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < J; ++j)
    if (row_in && c0 + j < n) p.dS0[sbase + c0 + j] = dS[j];
  if (tl == 0 && row_in) p.db_part[static_cast<int64_t>(blockIdx.x) * n + row] = dbb;
}

}  // namespace

std::vector<at::Tensor> sparse_block_bwd(const at::Tensor& proj_in, const at::Tensor& b_beta_in, const at::Tensor& w_in,
                                         const at::Tensor& ckpt_in, const at::Tensor& dy_in, const at::Tensor& dS_T_in,
                                         int64_t blocks, int64_t n) {
  const c10::cuda::CUDAGuard guard(proj_in.device());
  auto proj = proj_in.contiguous();
  const int64_t B = proj.size(0), T = proj.size(1), H = blocks;
  TORCH_CHECK(proj.size(2) == H * 4 * n, "sparse_block_bwd: scan_proj must be [B,T,", H * 4 * n, "], got ",
              proj.sizes());
  auto f32 = proj.options().dtype(at::kFloat);
  auto b_beta = b_beta_in.to(f32).contiguous();
  auto w = w_in.to(f32).contiguous();
  TORCH_CHECK(w.sizes() == at::IntArrayRef({B, T, H}), "sparse_block_bwd: w must be [B,T,B_k]");
  int64_t NP, K, nseg;
  delta::segment_geometry(n, T, NP, K, nseg);
  auto ckpt = ckpt_in.contiguous();
  TORCH_CHECK(ckpt.scalar_type() == at::kFloat && ckpt.sizes() == at::IntArrayRef({B * H, nseg, NP, NP}),
              "sparse_block_bwd: ckpt must be float32 [B*B_k, nseg, NP, NP] from sparse_block_fwd");
  // Incoming gradients may be undefined (that output did not reach the loss) or non-contiguous.
  at::Tensor dy = dy_in.defined() ? dy_in.to(proj.scalar_type()).contiguous() : at::Tensor();
  at::Tensor dS_T = dS_T_in.defined() ? dS_T_in.to(f32).contiguous() : at::Tensor();
  if (dy.defined()) TORCH_CHECK(dy.sizes() == at::IntArrayRef({B, T, H * n}), "sparse_block_bwd: dyb must be [B,T,B_k*n]");
  if (dS_T.defined())
    TORCH_CHECK(dS_T.sizes() == at::IntArrayRef({B, H, n, n}), "sparse_block_bwd: dS_T must be [B,B_k,n,n]");

  auto dproj = ops::empty_output({B, T, H * 4 * n}, proj.options());
  auto dS0 = ops::empty_output({B, H, n, n}, f32);
  auto dw = ops::empty_output({B, T, H}, f32);
  auto db_part = ops::empty_output({B, H, n}, f32);
  auto run = [&](auto tag) {
    using scalar_t = decltype(tag);
    ScanParams<scalar_t> p{};
    p.proj = proj.data_ptr<scalar_t>();
    p.b_beta = b_beta.data_ptr<float>();
    p.ckpt = ckpt.data_ptr<float>();
    p.dy = dy.defined() ? dy.data_ptr<scalar_t>() : nullptr;
    p.dS_T = dS_T.defined() ? dS_T.data_ptr<float>() : nullptr;
    p.dproj = dproj.data_ptr<scalar_t>();
    p.db_part = db_part.data_ptr<float>();
    p.dS0 = dS0.data_ptr<float>();
    p.w = w.data_ptr<float>();
    p.dw = dw.data_ptr<float>();
    p.B = int(B), p.T = int(T), p.H = int(H), p.n = int(n), p.nseg = int(nseg), p.gated = true;
    delta::dispatch_layout(n, [&](auto layout) {
      using L = decltype(layout);
      auto kernel = sparse_block_bwd_kernel<L, scalar_t>;
      constexpr int smem = sizeof(BwdSmem<L>);
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
      kernel<<<p.B * p.H, L::kThreads, smem, at::cuda::getCurrentCUDAStream()>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  };
  if (proj.scalar_type() == at::kBFloat16) run(c10::BFloat16{});
  else run(float{});
  return {dproj, db_part.sum(0), dw, dS0};
}

}  // namespace elman::cuda
