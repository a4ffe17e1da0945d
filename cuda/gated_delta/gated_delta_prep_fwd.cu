/* The gated delta rule's chunk preparation, forward (gated_delta_prep.h has the math): one block of kThreads per
 * (batch b, chunk c, head h), b-major then c then h, i.e. block (b * nc + c) * H + h owns row block bch of every
 * [B,nc,H,L,*] output.
 *   1. with qk_l2norm, the rows' L2-norm factors (l2_factors: q and k read as q^ = rq q, k^ = rk k from here on);
 *      g, beta -> exp(G), the segment-sum mask D, exp(seg[L-1][.]) (chunk_decays); K, Q rows into shared memory;
 *   2. M = K K^T, N = Q K^T (block products, fp32 accumulators);
 *   3. A = strictly-lower(beta_i M_ij D_ij) in place of M; P = N o D, Qg = exp(G) Q, Kl = exp(seg[L-1]) K and decay
 *      straight to global memory (q, k re-read from global memory in fp32, exact; every output but decay is
 *      rounded once to the operand type, in which the state pass multiplies them);
 *   4. T = (I + A)^{-1} (fp32 forward substitution, unit_lower_inverse), saved in the operand type for the backward;
 *   5. W = T (diag(beta exp(G)) K) and, per 64-column V tile, Ut = T (diag(beta) V), both written by the product
 *      straight to global memory (bf16: rounded through per-warp scratch in M, whose A is consumed by then).
 * Numerics: every sum and the solve in fp32; the products' operands are the operand type Op (bf16: tensor cores,
 * operands rounded to bf16; fp32: CUDA-core FMAs, as LibTorch's fp32 matmuls without TF32).
 *
 * Shared memory (byte offsets in PrepFwdSmem; fp32 [L,L] tiles have leading dim ldLf = 68):
 *   vec  g, beta, exp(G), beta exp(G), exp(seg[L-1][.]), rq, rk, Qg's and Kl's row scales   9 x 64 fp32
 *   D    [L,L]  fp32   the decay mask
 *   K    [L,K]  Op     K of the chunk (padded rows zero)
 *   Q    [L,K]  Op     Q, then R_W = diag(beta exp(G)) K
 *   M    [L,L]  fp32   K K^T, then A
 *   N    [L,L]  fp32   Q K^T, then T (fp32)
 *   Top  [L,L]  Op     T as the products' operand (bf16 only; fp32 reads N)
 *   Ru   [L,64] Op     one 64-column tile of R_U = diag(beta) V
 * 135 KB for fp32 operands, 104 KB for bf16; V is walked in 64-column tiles inside the block, so the footprint
 * does not grow with V.
 */
#include <ATen/cuda/CUDAContext.h>

#include "cuda/gated_delta/gated_delta_prep.cuh"
#include "cuda/gated_delta/gated_delta_prep.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
using namespace gdn;

template <typename Op>
struct PrepFwdParams {
  In q, k, v;
  const float *g, *beta;
  Op *W, *Ut, *Qg, *Kl, *P;  // in the operand type: what the state pass multiplies
  float* decay;
  Op* Tm;
  int steps, nc, H, V;
  bool l2;  // q, k L2-normalised here (qk_l2norm)
};

template <typename Op>
struct PrepFwdSmem {
  using G = Geo<Op>;
  static constexpr size_t vec = 0;
  static constexpr size_t D = carve(vec, sizeof(float) * 9 * kL);
  static constexpr size_t K = carve(D, sizeof(float) * kL * ldLf);
  static constexpr size_t Q = carve(K, sizeof(Op) * kL * G::ldK);
  static constexpr size_t M = carve(Q, sizeof(Op) * kL * G::ldK);
  static constexpr size_t N = carve(M, sizeof(float) * kL * ldLf);
  static constexpr size_t Top = carve(N, sizeof(float) * kL * ldLf);
  static constexpr size_t Ru = carve(Top, G::kBf16 ? sizeof(Op) * kL * G::ldL : 0);
  static constexpr size_t bytes = carve(Ru, sizeof(Op) * kL * G::ldL);
};

// bf16: two blocks per SM (64 registers, no spills; 94 before, one block); fp32 takes 135 KB of shared memory.
template <typename Op>
__global__ void __launch_bounds__(kThreads, Geo<Op>::kBf16 ? 2 : 1)
    gated_delta_prep_fwd_kernel(const PrepFwdParams<Op> p) {
  using G = Geo<Op>;
  using Sm = PrepFwdSmem<Op>;
  constexpr int ldK = G::ldK, ldL = G::ldL;
  extern __shared__ __align__(128) unsigned char smem[];
  float* gs = reinterpret_cast<float*>(smem + Sm::vec);
  float *bs = gs + kL, *gam = bs + kL, *wsc = gam + kL, *lam = wsc + kL, *rq = lam + kL, *rk = rq + kL;
  float *qsc = rk + kL, *ksc = qsc + kL;  // Qg = diag(qsc) q, Kl = diag(ksc) k
  float* D = reinterpret_cast<float*>(smem + Sm::D);
  Op* Ks = reinterpret_cast<Op*>(smem + Sm::K);
  Op* Qs = reinterpret_cast<Op*>(smem + Sm::Q);
  float* Mf = reinterpret_cast<float*>(smem + Sm::M);
  float* Nf = reinterpret_cast<float*>(smem + Sm::N);
  Op* Top = G::kBf16 ? reinterpret_cast<Op*>(smem + Sm::Top) : reinterpret_cast<Op*>(Nf);  // ldL (fp32: = ldLf)
  Op* Ru = reinterpret_cast<Op*>(smem + Sm::Ru);

  const int bch = blockIdx.x, h = bch % p.H, c = (bch / p.H) % p.nc, b = bch / (p.H * p.nc);
  const int t0 = c * kL, n = min(kL, p.steps - t0);
  const int64_t tile = static_cast<int64_t>(bch) * kL;  // row 0 of this block's [L, *] output tiles

  l2_factors(p.l2, p.q, p.k, b, t0, h, n, rq, rk);  // read after chunk_decays' barriers
  chunk_decays(p.g, p.beta, (static_cast<int64_t>(b) * p.steps + t0) * p.H + h, p.H, n, gs, bs, gam, wsc, lam, D);
  load_rows<Op, kK>(Ks, ldK, p.k, b, t0, h, n, 0, rk);
  load_rows<Op, kK>(Qs, ldK, p.q, b, t0, h, n, 0, rq);
  __syncthreads();
  if (threadIdx.x < kL) {  // read after the products' barrier
    qsc[threadIdx.x] = rq[threadIdx.x] * gam[threadIdx.x];
    ksc[threadIdx.x] = rk[threadIdx.x] * lam[threadIdx.x];
  }
  mm<Op, kL, kL>(Mf, ldLf, false, 0.f, term<Op>(Ks, ldK, false, Ks, ldK, true, kK));  // K K^T
  mm<Op, kL, kL>(Nf, ldLf, false, 0.f, term<Op>(Qs, ldK, false, Ks, ldK, true, kK));  // Q K^T
  __syncthreads();

  Op* P = p.P + tile * kL;
  for (int idx = threadIdx.x; idx < kL * kL; idx += kThreads) {
    const int i = idx / kL, j = idx - i * kL;
    const float d = D[i * ldLf + j];
    Mf[i * ldLf + j] = i > j ? Mf[i * ldLf + j] * d * bs[i] : 0.f;  // A
    P[idx] = from_f<Op>(i >= j ? Nf[i * ldLf + j] * d : 0.f);
  }
  load_rows<Op, kK>(p.Qg + tile * kK, kK, p.q, b, t0, h, n, 0, qsc);  // exp(G) q^
  load_rows<Op, kK>(p.Kl + tile * kK, kK, p.k, b, t0, h, n, 0, ksc);  // exp(seg[L-1]) k^
  if (threadIdx.x == 0) p.decay[bch] = gam[kL - 1];
  if (threadIdx.x < kL) wsc[threadIdx.x] *= rk[threadIdx.x];  // R_W's row scale now takes k^ = rk k
  __syncthreads();

  unit_lower_inverse<Op>(Mf, Nf, Top, ldL);  // T (Q K^T in N was consumed above)
  __syncthreads();
  float* scratch = Mf;  // A is consumed: the bf16 products' per-warp rounding scratch
  static_assert(kWarps * 256 <= kL * ldLf, "the rounding scratch does not fit in M");
  Op* Tm = p.Tm + tile * kL;
  for (int idx = threadIdx.x; idx < kL * kL; idx += kThreads) {
    const int i = idx / kL, j = idx - i * kL;
    Tm[idx] = Top[i * ldL + j];
  }
  load_rows<Op, kK>(Qs, ldK, p.k, b, t0, h, n, 0, wsc);  // R_W = diag(beta exp(G)) K^
  __syncthreads();
  mm_out<Op, kL, kK>(p.W + tile * kK, kK, scratch, term<Op>(Top, ldL, false, Qs, ldK, false, kL));
  for (int v0 = 0; v0 < p.V; v0 += kVT) {
    load_rows<Op, kVT>(Ru, ldL, p.v, b, t0, h, n, v0, bs);  // R_U tile = diag(beta) V
    __syncthreads();
    mm_out<Op, kL, kVT>(p.Ut + tile * p.V + v0, p.V, scratch, term<Op>(Top, ldL, false, Ru, ldL, false, kL));
    __syncthreads();
  }
}

}  // namespace

std::vector<at::Tensor> gated_delta_prep_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& g, const at::Tensor& beta, bool bf16, bool qk_l2norm) {
  const c10::cuda::CUDAGuard guard(q.device());
  check_prep_inputs("gated_delta_prep_fwd", q, k, v, g, beta);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), V = v.size(3), nc = (T + kL - 1) / kL;
  const auto op = q.options().dtype(bf16 ? at::kBFloat16 : at::kFloat);
  auto W = ops::empty_output({B, nc, H, kL, kK}, op);
  auto Ut = ops::empty_output({B, nc, H, kL, V}, op);
  auto Qg = ops::empty_output({B, nc, H, kL, kK}, op);
  auto Kl = ops::empty_output({B, nc, H, kL, kK}, op);
  auto P = ops::empty_output({B, nc, H, kL, kL}, op);
  auto decay = ops::empty_output({B, nc, H}, q.options().dtype(at::kFloat));
  auto Tm = ops::empty_output({B, nc, H, kL, kL}, op);
  auto run = [&](auto tag) {
    using Op = decltype(tag);
    PrepFwdParams<Op> p{};
    p.q = in_view(q), p.k = in_view(k), p.v = in_view(v);
    p.g = g.data_ptr<float>(), p.beta = beta.data_ptr<float>();
    auto ptr = [](at::Tensor& t) { return reinterpret_cast<Op*>(t.data_ptr()); };
    p.W = ptr(W), p.Ut = ptr(Ut), p.Qg = ptr(Qg), p.Kl = ptr(Kl), p.P = ptr(P), p.decay = decay.data_ptr<float>();
    p.Tm = ptr(Tm);
    p.steps = int(T), p.nc = int(nc), p.H = int(H), p.V = int(V), p.l2 = qk_l2norm;
    const size_t smem = PrepFwdSmem<Op>::bytes;
    C10_CUDA_CHECK(cudaFuncSetAttribute(gated_delta_prep_fwd_kernel<Op>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
    gated_delta_prep_fwd_kernel<Op><<<int(B * nc * H), kThreads, smem, at::cuda::getCurrentCUDAStream()>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (bf16) run(__nv_bfloat16{});
  else run(float{});
  return {W, Ut, Qg, Kl, P, decay, Tm};
}

}  // namespace elman::cuda
