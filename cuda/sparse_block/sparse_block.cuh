// Device pieces of the E87 sparse-block scan on top of delta_matrix's (cuda/delta_matrix/delta_matrix.cuh): the
// same thread layout (one block per (batch, memory block), a thread owns J columns of one row of the zero-padded
// NP x NP state, rows independent), the same segment staging of [k | v | q | b~] (a memory block is a "head" of
// delta_matrix's Params with H = B_k, always gated), plus the update weight w of each step:
//
//   P = tanh(diag(beta) S + (v - S khat) khat^T),  S <- S + w (P - S),  u = S q,  yb = u^2 sigmoid(u)
#pragma once
#include "cuda/delta_matrix/delta_matrix.cuh"

namespace elman::cuda::sparse {

using delta::load_cols;
using delta::Stage;

// delta_matrix's kernel parameters (H = B_k, gated) and the update weights.
template <typename scalar_t>
struct ScanParams : delta::Params<scalar_t> {
  const float* w;  // [B,T,B_k]
  float* dw;       // backward: [B,T,B_k]
};

// Per-segment update weights in shared memory, loaded into a register (threads < K) one segment ahead.
template <class L>
struct WeightPrefetch {
  float w = 0.f;
  template <typename scalar_t>
  __device__ __forceinline__ void load(const ScanParams<scalar_t>& p, int b, int j, int t0, int len) {
    w = threadIdx.x < len ? p.w[(static_cast<int64_t>(b) * p.T + t0 + threadIdx.x) * p.H + j] : 0.f;
  }
  __device__ __forceinline__ void store(float (&ws)[L::K]) const {
    if (threadIdx.x < L::K) ws[threadIdx.x] = w;
  }
};

// One forward step of one thread's J state elements (row `row`, columns from c0) with update weight w:
//   r = S khat (row sum), d = v - r, S += w (tanh(beta S + d khat) - S); returns u = S q; d through `d_out`.
template <class L>
__device__ __forceinline__ float mix_step_forward(float (&S)[L::J], const Stage<L>& st, float w, int s, int row,
                                                  int c0, float& d_out) {
  float kh[L::J], q[L::J];
  load_cols<L::J>(&st.kh[s][c0], kh);
  load_cols<L::J>(&st.q[s][c0], q);
  float r = 0.f;
#pragma unroll
  for (int j = 0; j < L::J; ++j) r = fmaf(S[j], kh[j], r);
  r = group_sum<L::TPR>(r);
  const float d = st.v[s][row] - r, be = st.be[s][row];
  float u = 0.f;
#pragma unroll
  for (int j = 0; j < L::J; ++j) {
    const float P = tanhf(fmaf(be, S[j], d * kh[j]));
    S[j] = fmaf(w, P - S[j], S[j]);
    u = fmaf(S[j], q[j], u);
  }
  d_out = d;
  return group_sum<L::TPR>(u);
}

}  // namespace elman::cuda::sparse
