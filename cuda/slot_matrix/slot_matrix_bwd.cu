/* Slot-matrix nonlinear cell (E63m), backward: one launch walks the segments in reverse (recurrence and layout in
 * slot_matrix_fwd.cu and slot_matrix.cuh).
 *
 * Per step t, with S = S_{t-1} (the state before the step), S' = S_t, G = dL/dS' (the carried gradient dS plus the
 * output's du q^T), y = tanh(u), u = S' q:
 *   du     = dy (1 - y^2)                                               (slot)
 *   G      = dS + du q^T                                                (element)
 *   p1_i   = sum_j G_ij S_ij,  p2_i = sum_j G_ij k_j                    (block sums, one round)
 *   dalpha = p1 - v p2 -> da = dalpha alpha (1 - alpha)  (= d wa, d b_alpha)
 *   dv     = (1 - alpha) p2 -> dpv = dv (1 - v^2)        (= d wx, d b; dW_r += dpv r^T)
 *   dr     = W_r^T dpv -> drk = dr (1 - r^2)            (r = tanh(S k))
 *   dk_j   = sum_i (G_ij (1 - alpha_i) v_i + S_ij drk_i)                (column: no reduction)
 *   dq_j   = sum_i du_i S'_ij                                           (column)
 *   dS     = diag(alpha) G + drk k^T                                    (carried to step t-1, fp32 registers)
 * The walk starts from dS = dS_T, so gradient flows from the final state, and ends with dS0.
 *
 * Per segment of K = 16 steps (last to first): stage the segment's dy in shared memory, recompute the segment once
 * from its fp32 checkpoint with the forward's step walk (walk_forward), which writes every state S_{t-1} to a
 * global scratch buffer (each thread reads back only its own columns: no synchronisation, L2-resident) and r, v,
 * alpha, du per step to shared memory; then walk the steps backwards as above, one block reduction (2 N values)
 * per step. dq of step t needs S_t, which is the state loaded for step t + 1, so it is written one step later
 * (the segment's last step from the recomputed end state). After the segment: d wx, d wa of its steps from shared
 * memory, and the per-block sums of dW_r, db, db_alpha (threads own elements of [dW_r | db | db_alpha]).
 * Recompute is O(T) in total (each step once).
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/slot_matrix/slot_matrix.cuh"
#include "cuda/slot_matrix/slot_matrix.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
using namespace slots;

template <int N, int C, typename scalar_t>
__global__ void __launch_bounds__(kThreads) slot_matrix_bwd_kernel(const Params<scalar_t> p) {
  constexpr int NP = Common<N>::NP;
  constexpr int E = N * N + 2 * N, EPT = (E + 31) / 32;  // [dW_r | db | db_alpha] elements, per thread (>= 32)
  __shared__ Common<N> sm;
  __shared__ Record<N> rec;
  extern __shared__ float4 ring_mem[];
  scalar_t* ring = reinterpret_cast<scalar_t*>(ring_mem);
  const int b = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32, li = lane < N ? lane : 0;
  const int D = p.D, NT = blockDim.x;
  const int64_t P = 2 * static_cast<int64_t>(D) + 2 * N;
  scalar_t* gb = p.dproj + static_cast<int64_t>(b) * p.T * P;
  float* scr = p.scratch + static_cast<int64_t>(b) * kSegment * N * D;
  load_common<N>(sm, p.W_r, p.b, p.b_alpha);  // visible after the first barrier (in walk_forward)

  float dS[N][C];
  if (p.dS_T) {
    load_state<N, C>(p.dS_T + static_cast<int64_t>(b) * N * D, D, dS);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
      for (int j = 0; j < C; ++j) dS[i][j] = 0.f;
  }
  float acc[EPT];
#pragma unroll
  for (int m = 0; m < EPT; ++m) acc[m] = 0.f;
  int buf = 0;

  for (int seg = p.nseg - 1; seg >= 0; --seg) {
    const int t0 = seg * kSegment, len = min(kSegment, p.T - t0);
    // The previous segment's epilogue is done with rec (it passed a barrier before reading dpv, da, r; nothing
    // reads dy after the recompute), so dy can be staged now; walk_forward's first barrier publishes it.
    for (int idx = threadIdx.x; idx < kSegment * NP; idx += NT) {
      const int s = idx / NP, i = idx - s * NP;
      rec.dy[s][i] = p.dy && s < len && i < N ? static_cast<float>(p.dy[(static_cast<int64_t>(b) * p.T + t0 + s) * N + i])
                                              : 0.f;
    }

    // Recompute the segment: scratch[s] = the state before step t0 + s; S ends as the state after the segment's
    // last step.
    float S[N][C];
    load_state<N, C>(p.ckpt + (static_cast<int64_t>(b) * p.nseg + seg) * N * D, D, S);
    walk_forward<N, C, scalar_t>(p, sm, ring, &rec, b, t0, len, S, buf);
    __syncthreads();  // rec.r, v, al, du of every step

    // dq of the segment's last step from the state after it.
    {
      const int t = t0 + len - 1;
      float dq[C];
#pragma unroll
      for (int j = 0; j < C; ++j) dq[j] = 0.f;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const float du = rec.du[len - 1][i];
#pragma unroll
        for (int j = 0; j < C; ++j) dq[j] = fmaf(du, S[i][j], dq[j]);
      }
#pragma unroll
      for (int j = 0; j < C; ++j) {
        const int c = threadIdx.x + j * NT;
        if (c < D) gb[static_cast<int64_t>(t) * P + D + c] = static_cast<scalar_t>(dq[j]);
      }
    }

    // Walk the segment backwards. The ring is free (the barrier above); rows t1 .. t1 - kStages + 2 in flight, row
    // t1 waited for and published; each step then starts the copy of row t - kStages + 1 into the slot of row
    // t + 1 and waits for row t - 1 before its barrier.
    const int t1 = t0 + len - 1;
#pragma unroll
    for (int i = 0; i < kStages - 1; ++i) {
      if (t1 - i >= t0) issue_row<N>(p, ring, b, t1 - i);
      cp_async_commit();
    }
    cp_async_wait<kStages - 2>();
    __syncthreads();
    for (int s = len - 1; s >= 0; --s) {
      const int t = t0 + s;
      if (t - kStages + 1 >= t0) issue_row<N>(p, ring, b, t - kStages + 1);
      cp_async_commit();
      float k[C], q[C];
      load_cols<C>(ring_row(ring, p, t), 0, D, k);
      load_cols<C>(ring_row(ring, p, t), D, D, q);
      load_state<N, C>(scr + static_cast<int64_t>(s) * N * D, D, S);  // S_{t-1}: the state before step t

      // G = dS + du q^T (in place), and the partial sums p1 = G . S, p2 = G k per slot.
      float a[NP];
#pragma unroll
      for (int i = 0; i < NP; ++i) a[i] = 0.f;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const float du = rec.du[s][i];
        float x = 0.f, y = 0.f;
#pragma unroll
        for (int j = 0; j < C; ++j) {
          dS[i][j] = fmaf(du, q[j], dS[i][j]);
          x = fmaf(dS[i][j], S[i][j], x);
          y = fmaf(dS[i][j], k[j], y);
        }
        a[i] = pair_level(x, y, lane);
      }
      // dq of step t - 1: its output read the state before step t.
      if (s > 0) {
        float dq[C];
#pragma unroll
        for (int j = 0; j < C; ++j) dq[j] = 0.f;
#pragma unroll
        for (int i = 0; i < N; ++i) {
          const float du = rec.du[s - 1][i];
#pragma unroll
          for (int j = 0; j < C; ++j) dq[j] = fmaf(du, S[i][j], dq[j]);
        }
#pragma unroll
        for (int j = 0; j < C; ++j) {
          const int c = threadIdx.x + j * NT;
          if (c < D) gb[static_cast<int64_t>(t - 1) * P + D + c] = static_cast<scalar_t>(dq[j]);
        }
      }
      cp_async_wait<kStages - 2>();  // row t - 1, published by the barrier in block_sums
      const float tot = block_sums<N>(sm, a, buf);

      // Slot scalars on lane i: p1_i (this lane's sum), p2_i (lane NP + i's).
      const float p1 = tot, p2 = __shfl_sync(kFull, tot, NP + li);
      const float v = rec.v[s][li], al = rec.al[s][li], r = rec.r[s][li];
      const float da = (p1 - v * p2) * al * (1.f - al);
      const float dpv = (1.f - al) * p2 * (1.f - v * v);
      float dr = 0.f;  // lane j: (W_r^T dpv)_j
#pragma unroll
      for (int i = 0; i < N; ++i) dr = fmaf(sm.Wr[i][li], __shfl_sync(kFull, dpv, i), dr);
      const float drk = dr * (1.f - r * r);
      if (warp == 0 && lane < N) rec.dpv[s][lane] = dpv, rec.da[s][lane] = da;

      // Columns: dk, and the carried gradient for step t - 1.
      float dk[C];
#pragma unroll
      for (int j = 0; j < C; ++j) dk[j] = 0.f;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const float ai = __shfl_sync(kFull, al, i), ci = (1.f - ai) * __shfl_sync(kFull, v, i);
        const float gi = __shfl_sync(kFull, drk, i);
#pragma unroll
        for (int j = 0; j < C; ++j) {
          const float g = dS[i][j];
          dk[j] = fmaf(g, ci, fmaf(S[i][j], gi, dk[j]));
          dS[i][j] = fmaf(ai, g, gi * k[j]);
        }
      }
#pragma unroll
      for (int j = 0; j < C; ++j) {
        const int c = threadIdx.x + j * NT;
        if (c < D) gb[static_cast<int64_t>(t) * P + c] = static_cast<scalar_t>(dk[j]);
      }
    }
    __syncthreads();  // rec.dpv, rec.da of every step

    // d wx, d wa of the segment's steps, and this block's sums of dW_r, db, db_alpha.
    for (int idx = threadIdx.x; idx < len * N; idx += NT) {
      const int s = idx / N, i = idx - s * N;
      scalar_t* dst = gb + static_cast<int64_t>(t0 + s) * P + 2 * D;
      dst[i] = static_cast<scalar_t>(rec.dpv[s][i]);
      dst[N + i] = static_cast<scalar_t>(rec.da[s][i]);
    }
#pragma unroll
    for (int m = 0; m < EPT; ++m) {
      const int e = threadIdx.x + m * NT;
      if (e < N * N) {
        const int i = e / N, j = e - i * N;
        for (int s = 0; s < len; ++s) acc[m] = fmaf(rec.dpv[s][i], rec.r[s][j], acc[m]);
      } else if (e < N * N + N) {
        for (int s = 0; s < len; ++s) acc[m] += rec.dpv[s][e - N * N];
      } else if (e < E) {
        for (int s = 0; s < len; ++s) acc[m] += rec.da[s][e - N * N - N];
      }
    }
    // The next segment's recompute writes rec only after its first barrier, which every thread reaches after
    // finishing the reads above.
  }
  store_state<N, C>(p.dS0 + static_cast<int64_t>(b) * N * D, D, dS);
#pragma unroll
  for (int m = 0; m < EPT; ++m) {
    const int e = threadIdx.x + m * NT;
    if (e < E) p.dpar[static_cast<int64_t>(b) * E + e] = acc[m];
  }
}

template <typename scalar_t>
void launch_bwd(Params<scalar_t> p, int64_t slots) {
  dispatch_layout(slots, p.D, [&](auto n, auto c) {
    constexpr int N = decltype(n)::value, C = decltype(c)::value;
    auto kernel = slot_matrix_bwd_kernel<N, C, scalar_t>;
    const auto l = plan_launch(kernel, p.D, 2 * int64_t(p.D) + 2 * N, sizeof(scalar_t));
    p.pitch = l.pitch;
    kernel<<<p.B, l.threads, l.smem, at::cuda::getCurrentCUDAStream()>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

std::vector<at::Tensor> slot_matrix_bwd(const at::Tensor& proj_in, const at::Tensor& W_r_in, const at::Tensor& b_in,
                                        const at::Tensor& b_alpha_in, const at::Tensor& ckpt_in, const at::Tensor& dy_in,
                                        const at::Tensor& dS_T_in, int64_t slots) {
  const c10::cuda::CUDAGuard guard(proj_in.device());
  auto proj = proj_in.contiguous();
  if (reinterpret_cast<uintptr_t>(proj.data_ptr()) % 4 != 0) proj = proj.clone();  // cp.async needs 4-byte alignment
  const int64_t B = proj.size(0), T = proj.size(1), N = slots, D = (proj.size(2) - 2 * N) / 2;
  TORCH_CHECK(D >= 1 && proj.size(2) == 2 * D + 2 * N, "slot_matrix_bwd: proj must be [B,T,2D+2N], got ",
              proj.sizes());
  auto f32 = proj.options().dtype(at::kFloat);
  auto W_r = W_r_in.to(f32).contiguous(), b = b_in.to(f32).contiguous(), b_alpha = b_alpha_in.to(f32).contiguous();
  const int64_t nseg = (T + kSegment - 1) / kSegment;
  auto ckpt = ckpt_in.contiguous();
  TORCH_CHECK(ckpt.scalar_type() == at::kFloat && ckpt.sizes() == at::IntArrayRef({B, nseg, N, D}),
              "slot_matrix_bwd: ckpt must be float32 [B, nseg, N, D] from slot_matrix_fwd");
  // Incoming gradients may be undefined (that output did not reach the loss) or non-contiguous.
  at::Tensor dy = dy_in.defined() ? dy_in.to(proj.scalar_type()).contiguous() : at::Tensor();
  at::Tensor dS_T = dS_T_in.defined() ? dS_T_in.to(f32).contiguous() : at::Tensor();
  if (dy.defined()) TORCH_CHECK(dy.sizes() == at::IntArrayRef({B, T, N}), "slot_matrix_bwd: dy must be [B,T,N]");
  if (dS_T.defined()) TORCH_CHECK(dS_T.sizes() == at::IntArrayRef({B, N, D}), "slot_matrix_bwd: dS_T must be [B,N,D]");

  const int64_t E = N * N + 2 * N;
  auto dproj = ops::empty_output({B, T, 2 * D + 2 * N}, proj.options());
  auto dS0 = ops::empty_output({B, N, D}, f32);
  auto dpar = ops::empty_output({B, E}, f32);
  auto scratch = ops::empty_output({B, kSegment, N, D}, f32);
  auto run = [&](auto tag) {
    using scalar_t = decltype(tag);
    Params<scalar_t> p{};
    p.proj = proj.data_ptr<scalar_t>();
    p.W_r = W_r.data_ptr<float>(), p.b = b.data_ptr<float>(), p.b_alpha = b_alpha.data_ptr<float>();
    p.ckpt = ckpt.data_ptr<float>();
    p.dy = dy.defined() ? dy.data_ptr<scalar_t>() : nullptr;
    p.dS_T = dS_T.defined() ? dS_T.data_ptr<float>() : nullptr;
    p.dproj = dproj.data_ptr<scalar_t>();
    p.dpar = dpar.data_ptr<float>();
    p.dS0 = dS0.data_ptr<float>();
    p.scratch = scratch.data_ptr<float>();
    p.B = int(B), p.T = int(T), p.D = int(D), p.nseg = int(nseg);
    p.vec16 = (2 * D + 2 * N) * sizeof(scalar_t) % 16 == 0 && reinterpret_cast<uintptr_t>(p.proj) % 16 == 0;
    launch_bwd(p, N);
  };
  if (proj.scalar_type() == at::kBFloat16) run(c10::BFloat16{});
  else run(float{});
  auto dsum = dpar.sum(0);
  return {dproj, dsum.narrow(0, 0, N * N).view({N, N}), dsum.narrow(0, N * N, N), dsum.narrow(0, N * N + N, N), dS0};
}

}  // namespace elman::cuda
