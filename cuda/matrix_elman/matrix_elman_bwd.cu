/* Matrix-state Elman cells E70-E73, backward: one launch walks the segments in reverse (recurrences in
 * ops/matrix_elman/reference.h, layout in matrix_elman.cuh, derivation in ops/matrix_elman/README.md).
 *
 * Per step and state row i (warp), with s' = row i of S_{t-1}, s = row i of S_t, u = s . q,
 * du = dy_i (2 u sigma(u) + u^2 sigma(u) (1 - sigma(u))), G = dS + du q (dS: the carried gradient of row i of S_t),
 * c = G . k, e = G . s' (warp sums):
 *   E70  dv = c, dlambda += e, dk += v G, dS = lambda G
 *   E71  dpre = (e - v c) alpha (1 - alpha), dr = dpre d_alpha: da = dpre, dv = (1 - alpha) c,
 *        db_alpha += dpre, dd_alpha += dpre r, dk += (1 - alpha) v G + dr s', dS = alpha G + dr k
 *   E72  da = (e - v g c) alpha (1 - alpha), dv = (1 - alpha) g c, dgp = (1 - alpha) v c g (1 - g), dr = dgp d_g:
 *        db_alpha += da, dd_g += dgp r, db_g += dgp, dk += (1 - alpha) v g G + dr s', dS = alpha G + dr k
 *   E73  dp = G (1 - s^2), dv = dp . k: dk += v dp, dz += dp s', dS = dp z   (dz~ = dz (1 - z^2))
 *   all  dq += du s
 * dk, dq, dz sum over rows: every warp adds its lane's columns into the block's fp32 shared-memory sums with
 * shared atomics, and after the segment the block adds them (float4 atomics) into gcol [B,T,kCols,n4] in global
 * memory, which sums the ceil(n / 8) blocks of a batch element. So these gradients are not bitwise repeatable.
 * Row outputs dv (, da) are staged in shared memory and written as runs of 8 consecutive rows; the per-row
 * parameters' gradients are summed over T in registers and written per (batch, row) to wpart.
 *
 * Per segment of K steps (last to first): stage the inputs and dy and take the fp32 checkpoint (all loaded into
 * registers while the later segment ran; the next loads are issued now); recompute the K states once into
 * shared memory (hist: each warp its own row, each lane its own columns, so no synchronisation; registers would
 * not fit the 80 per thread that three blocks per SM allow), lane s keeping step s's row scalars (r, alpha, g,
 * du; read back by shuffles); walk the K steps backwards with the fp32 carried gradient in registers; one
 * __syncthreads; then the block's outputs of the segment. Recompute is O(T) in total.
 * The walk starts from dS = dS_T, so gradient flows from the final state, and ends with dS0.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/matrix_elman/matrix_elman.cuh"
#include "cuda/matrix_elman/matrix_elman.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
using namespace matrix;

// Blocks per SM the backward must fit (registers <= 80 per thread): the 100M shape's 384 blocks (batch 32 x
// 96 rows / 8) then run in one wave on 132 SMs.
constexpr int kBwdMinBlocks = 3;

template <class L, int C>
struct BwdSmem {
  Stage<L, C> st;
  float dy[L::K][kRows];
  float col[CellTraits<C>::kCols][L::K][L::NP];  // the block's sums over rows of dk, dq (, dz)
  float dv[L::K][kRows];
  float da[L::K][kRows];                // E71, E72
  float hist[kRows][L::K + 1][L::NP];  // each warp's row of S_{t0} .. S_{t0+K}, recomputed (lane-private columns)
};

template <class L, int C, typename scalar_t>
__global__ void __launch_bounds__(kThreads, kBwdMinBlocks) matrix_elman_bwd_kernel(const Params<scalar_t> p) {
  using CT = CellTraits<C>;
  constexpr int NP = L::NP, J = L::J, K = L::K, kCols = CT::kCols;
  extern __shared__ float4 smem4[];
  BwdSmem<L, C>& sm = *reinterpret_cast<BwdSmem<L, C>*>(smem4);
  const int b = blockIdx.x / p.nblk, i0 = (blockIdx.x - b * p.nblk) * kRows, n = p.n;
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32, row = i0 + w;
  const bool active = row < n;
  const RowParams rp = load_row_params<C>(p.w, n, row);
  const int64_t sbase = (static_cast<int64_t>(b) * n + row) * n;  // [b,row,:] of S0 / S_T
  float dS[J];
#pragma unroll
  for (int e = 0; e < J; ++e) dS[e] = p.dS_T && active && lane + 32 * e < n ? p.dS_T[sbase + lane + 32 * e] : 0.f;
  float wacc[CT::Pw] = {};  // sums over t of the per-row parameters' gradients (E70, E71, E72)
  for (int idx = threadIdx.x; idx < kCols * K * NP; idx += kThreads) (&sm.col[0][0][0])[idx] = 0.f;
  float(&hist)[K + 1][NP] = sm.hist[w];

  // Segment seg's inputs, dy and checkpoint are loaded into registers while segment seg + 1 runs.
  Prefetch<L, C, scalar_t> pf;
  scalar_t dyr;
  float ckr[J];
  auto prefetch = [&](int seg) {
    const int t0 = seg * K, len = min(K, p.T - t0);
    pf.load(p, b, i0, t0, len);
    const int s = threadIdx.x / kRows, r = i0 + threadIdx.x % kRows;
    dyr = p.dy && threadIdx.x < K * kRows && s < len && r < n
              ? p.dy[(static_cast<int64_t>(b) * p.T + t0 + s) * n + r]
              : scalar_t(0.f);
    const float* ck = p.ckpt + ((static_cast<int64_t>(b) * n + row) * p.nseg + seg) * NP + lane;
#pragma unroll
    for (int e = 0; e < J; ++e) ckr[e] = active ? ck[32 * e] : 0.f;
  };
  prefetch(p.nseg - 1);

  for (int seg = p.nseg - 1; seg >= 0; --seg) {
    const int t0 = seg * K, len = min(K, p.T - t0);
    __syncthreads();  // the previous segment's output pass is done with shared memory
    pf.store(p, i0, sm.st);
    if (threadIdx.x < K * kRows) sm.dy[threadIdx.x / kRows][threadIdx.x % kRows] = static_cast<float>(dyr);
    float S[J];  // the row of S_{t0+s}: the checkpoint, then recomputed forward
#pragma unroll
    for (int e = 0; e < J; ++e) S[e] = ckr[e], hist[0][lane + 32 * e] = ckr[e];
    __syncthreads();
    if (seg > 0) prefetch(seg - 1);  // in flight during this segment

    // Recompute the segment's states into hist; lane s keeps step s's row scalars.
    float my_r = 0.f, my_al = 0.f, my_g = 0.f, my_du = 0.f;
    for (int s = 0; s < len; ++s) {
      const RowStep o = step_forward<L, C>(S, sm.st, s, w, lane, rp);
#pragma unroll
      for (int e = 0; e < J; ++e) hist[s + 1][lane + 32 * e] = S[e];
      const float sg = sigmoid(o.u);
      const float du = sm.dy[s][w] * (o.u * sg * (2.f + o.u * (1.f - sg)));
      if (lane == s) my_r = o.r, my_al = o.al, my_g = o.g, my_du = du;
    }

    // Walk the segment backwards; S holds the row of S_{t0+s+1} (the step's new state), So the old one.
    for (int s = len - 1; s >= 0; --s) {
      const float du = __shfl_sync(0xffffffffu, my_du, s), v = sm.st.v[s][w];
      float So[J], k[J], G[J], ck[J], cz[J];
#pragma unroll
      for (int e = 0; e < J; ++e) {
        So[e] = hist[s][lane + 32 * e];
        k[e] = sm.st.k[s][lane + 32 * e];
        G[e] = fmaf(du, sm.st.q[s][lane + 32 * e], dS[e]);
      }
      float dv, da = 0.f;
      if constexpr (C == kE73) {
        float dp[J], c = 0.f;
#pragma unroll
        for (int e = 0; e < J; ++e) {
          dp[e] = G[e] * (1.f - S[e] * S[e]);
          c = fmaf(dp[e], k[e], c);
        }
        dv = warp_sum(c);
#pragma unroll
        for (int e = 0; e < J; ++e) {
          dS[e] = dp[e] * sm.st.z[s][lane + 32 * e];
          ck[e] = v * dp[e];
          cz[e] = dp[e] * So[e];
        }
      } else {
        float c = 0.f, ge = 0.f;
#pragma unroll
        for (int e = 0; e < J; ++e) c = fmaf(G[e], k[e], c), ge = fmaf(G[e], So[e], ge);
        warp_sum2(c, ge);
        if constexpr (C == kE70) {
          dv = c;
          wacc[0] += ge;
#pragma unroll
          for (int e = 0; e < J; ++e) ck[e] = v * G[e], dS[e] = rp.lam * G[e];
        } else {
          const float al = __shfl_sync(0xffffffffu, my_al, s), r = __shfl_sync(0xffffffffu, my_r, s);
          float cg, dr;  // cg: the coefficient of G in dk
          if constexpr (C == kE71) {
            da = (ge - v * c) * al * (1.f - al);
            dr = da * rp.d_alpha;
            dv = (1.f - al) * c;
            cg = (1.f - al) * v;
            wacc[0] += da, wacc[1] += da * r;
          } else {
            const float g = __shfl_sync(0xffffffffu, my_g, s);
            da = (ge - v * g * c) * al * (1.f - al);
            const float dgp = (1.f - al) * v * c * g * (1.f - g);
            dr = dgp * rp.d_g;
            dv = (1.f - al) * g * c;
            cg = (1.f - al) * v * g;
            wacc[0] += da, wacc[1] += dgp * r, wacc[2] += dgp;
          }
#pragma unroll
          for (int e = 0; e < J; ++e) ck[e] = fmaf(cg, G[e], dr * So[e]), dS[e] = fmaf(al, G[e], dr * k[e]);
        }
      }
      if (active) {
#pragma unroll
        for (int e = 0; e < J; ++e) {
          atomicAdd(&sm.col[0][s][lane + 32 * e], ck[e]);
          atomicAdd(&sm.col[1][s][lane + 32 * e], du * S[e]);
          if constexpr (CT::kZ) atomicAdd(&sm.col[2][s][lane + 32 * e], cz[e]);
        }
        if (lane == 0) {
          sm.dv[s][w] = dv;
          if constexpr (CT::kGate) sm.da[s][w] = da;
        }
      }
#pragma unroll
      for (int e = 0; e < J; ++e) S[e] = So[e];
    }
    __syncthreads();

    // Outputs of the segment: the block's column sums into gcol (E73's dz through tanh': dz~), rows into dproj.
    constexpr int NQ = NP / 4;
    for (int idx = threadIdx.x; idx < len * NQ; idx += kThreads) {
      const int s = idx / NQ, j = 4 * (idx - s * NQ);
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        float4* src = reinterpret_cast<float4*>(&sm.col[c][s][j]);
        float4 val = *src;
        *src = make_float4(0.f, 0.f, 0.f, 0.f);  // zero for the next segment
        if (j >= n) continue;
        if constexpr (CT::kZ) {
          if (c == 2) {
            const float* z = &sm.st.z[s][j];
            val.x *= 1.f - z[0] * z[0], val.y *= 1.f - z[1] * z[1], val.z *= 1.f - z[2] * z[2];
            val.w *= 1.f - z[3] * z[3];
          }
        }
        atomicAdd(reinterpret_cast<float4*>(p.gcol + ((static_cast<int64_t>(b) * p.T + t0 + s) * kCols + c) * p.n4 + j),
                  val);
      }
    }
    for (int idx = threadIdx.x; idx < len * kRows; idx += kThreads) {
      const int s = idx / kRows, r = idx - s * kRows;
      if (i0 + r < n) {
        scalar_t* d = p.dproj + (static_cast<int64_t>(b) * p.T + t0 + s) * CT::P * n + i0 + r;
        d[n] = static_cast<scalar_t>(sm.dv[s][r]);
        if constexpr (CT::kGate) d[3 * n] = static_cast<scalar_t>(sm.da[s][r]);
      }
    }
  }
  if (active) {
#pragma unroll
    for (int e = 0; e < J; ++e)
      if (lane + 32 * e < n) p.dS0[sbase + lane + 32 * e] = dS[e];
    if (!CT::kZ && lane == 0) {
#pragma unroll
      for (int i = 0; i < CT::Pw; ++i) p.wpart[(static_cast<int64_t>(b) * CT::Pw + i) * n + row] = wacc[i];
    }
  }
}

}  // namespace

std::vector<at::Tensor> matrix_elman_bwd(int cell, const at::Tensor& proj_in, const at::Tensor& w_in,
                                         const at::Tensor& ckpt_in, const at::Tensor& dy_in, const at::Tensor& dS_T_in,
                                         int64_t n) {
  const c10::cuda::CUDAGuard guard(proj_in.device());
  auto proj = proj_in.contiguous();
  const int64_t B = proj.size(0), T = proj.size(1);
  auto f32 = proj.options().dtype(at::kFloat);
  auto w = w_in.to(f32).contiguous();
  int64_t NP, K, nseg;
  segment_geometry(n, T, NP, K, nseg);
  const int64_t nblk = (n + kRows - 1) / kRows, n4 = (n + 3) / 4 * 4;
  auto ckpt = ckpt_in.contiguous();
  TORCH_CHECK(ckpt.scalar_type() == at::kFloat && ckpt.sizes() == at::IntArrayRef({B, n, nseg, NP}),
              "matrix_elman_bwd: ckpt must be float32 [B, n, nseg, NP] from matrix_elman_fwd");
  // Incoming gradients may be undefined (that output did not reach the loss) or non-contiguous.
  at::Tensor dy = dy_in.defined() ? dy_in.to(proj.scalar_type()).contiguous() : at::Tensor();
  at::Tensor dS_T = dS_T_in.defined() ? dS_T_in.to(f32).contiguous() : at::Tensor();
  if (dy.defined()) TORCH_CHECK(dy.sizes() == at::IntArrayRef({B, T, n}), "matrix_elman_bwd: dy must be [B,T,n]");
  if (dS_T.defined()) TORCH_CHECK(dS_T.sizes() == at::IntArrayRef({B, n, n}), "matrix_elman_bwd: dS_T must be [B,n,n]");

  std::vector<at::Tensor> out;
  dispatch_cell(cell, [&](auto c) {
    constexpr int C = decltype(c)::value;
    using CT = CellTraits<C>;
    TORCH_CHECK(proj.size(2) == CT::P * n && w.sizes() == at::IntArrayRef({CT::Pw, n}),
                "matrix_elman_bwd: proj must be [B,T,", CT::P * n, "] and w [", CT::Pw, ",", n, "], got ",
                proj.sizes(), " and ", w.sizes());
    at::Tensor dproj = ops::empty_output({B, T, CT::P * n}, proj.options());
    at::Tensor gcol = at::zeros({B, T, CT::kCols, n4}, f32);  // accumulated by atomics
    at::Tensor wpart = CT::kZ ? at::Tensor() : ops::empty_output({B, CT::Pw, n}, f32);
    at::Tensor dS0 = ops::empty_output({B, n, n}, f32);
    auto run = [&](auto tag) {
      using scalar_t = decltype(tag);
      Params<scalar_t> p{};
      p.proj = proj.data_ptr<scalar_t>();
      p.w = w.data_ptr<float>();
      p.ckpt = ckpt.data_ptr<float>();
      p.dy = dy.defined() ? dy.data_ptr<scalar_t>() : nullptr;
      p.dS_T = dS_T.defined() ? dS_T.data_ptr<float>() : nullptr;
      p.dproj = dproj.data_ptr<scalar_t>();
      p.gcol = gcol.data_ptr<float>();
      p.wpart = wpart.defined() ? wpart.data_ptr<float>() : nullptr;
      p.dS0 = dS0.data_ptr<float>();
      p.B = int(B), p.T = int(T), p.n = int(n), p.n4 = int(n4), p.nblk = int(nblk), p.nseg = int(nseg);
      dispatch_layout(n, [&](auto layout) {
        using L = decltype(layout);
        auto kernel = matrix_elman_bwd_kernel<L, C, scalar_t>;
        constexpr int smem = sizeof(BwdSmem<L, C>);
        C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        kernel<<<static_cast<unsigned>(B * nblk), kThreads, smem, at::cuda::getCurrentCUDAStream()>>>(p);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    };
    if (proj.scalar_type() == at::kBFloat16) run(c10::BFloat16{});
    else run(float{});
    // The column-summed gradients into dproj's k, q (, z~) slots; the per-row parameters' gradients.
    at::Tensor d = dproj.view({B, T, CT::P, n});
    d.select(2, 0).copy_(gcol.select(2, 0).narrow(2, 0, n));
    d.select(2, 2).copy_(gcol.select(2, 1).narrow(2, 0, n));
    at::Tensor dw;
    if constexpr (CT::kZ) {
      at::Tensor dzt = gcol.select(2, 2).narrow(2, 0, n);
      d.select(2, 3).copy_(dzt);
      dw = dzt.sum(at::IntArrayRef{0, 1}).unsqueeze(0);  // b_z
    } else {
      dw = wpart.sum(0);
    }
    if constexpr (C == kE70) dw = dw * (w.ge(0.f) & w.le(0.999f)).to(at::kFloat);  // clamp's gradient
    out = {dproj, dw, dS0};
  });
  return out;
}

}  // namespace elman::cuda
