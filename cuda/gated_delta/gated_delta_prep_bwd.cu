/* The gated delta rule's chunk preparation, backward: one block of kThreads per (batch b, chunk c, head h) as the
 * forward, which writes the chunk's rows of dq, dk, dv, dg, dbeta (no atomics: deterministic).
 *
 * The adjoints (gated_delta_prep.h has the forward; upstream dW, dUt, dQg, dKl, dP, ddecay; R_W = diag(beta exp(G)) K,
 * R_U = diag(beta) V, so [W | Ut] = T [R_W | R_U]; M = K K^T, N = Q K^T):
 *   solve      dR_W = T^T dW, dR_U = T^T dUt;  dA = -strictly-lower(dR_W W^T + dR_U Ut^T) = -strictly-lower(E T^T)
 *              with E = dR_W R_W^T + dR_U R_U^T (so neither W nor Ut is needed)
 *   R_W, R_U   dk += beta exp(G) dR_W,  dbeta += exp(G) (k . dR_W) + v . dR_U,  dG += beta exp(G) (k . dR_W),
 *              dv = beta dR_U
 *   A          dbeta_i += sum_j dA_ij M_ij D_ij,  dD += beta_i dA o M,  dM = beta_i dA o D,  dk += (dM + dM^T) K
 *   P          dN = dP o D (lower, diagonal included),  dD += dP o N,  dq += dN K,  dk += dN^T Q
 *   Qg, Kl     dq += exp(G) dQg,  dG += exp(G) (q . dQg);  dk += lam dKl,  dseg[L-1][j] += lam_j (k_j . dKl_j)
 *   L2 norms   (qk_l2norm: q, k above are q^ = rq q, k^ = rk k, l2_factors) dk = rk dk^ - rk^3 (k . dk^) k,
 *              dq = rq dq^ - K rq^3 (q . dq^) q
 *   decay      dG[L-1] += exp(G_{L-1}) ddecay
 *   g          dseg = dD o D (strictly lower) and the Kl term;  dg_k = sum_{j<k} sum_{i>=k} dseg[i][j] + sum_{i>=k} dG_i
 *              (seg[i][j] holds g_k for j < k <= i, G_i for k <= i): column suffix sums, then row sums.
 *
 * Steps and shared memory (byte offsets in PrepBwdSmem; fp32 tiles [L][ldLf] / [L][ldKf], Op tiles [L][Geo<Op>::ld*]):
 *   vec  g, beta, exp(G), beta exp(G), lam, dG, dbeta, dlam, rq, rk   10 x 64 fp32
 *   D    [L,L] fp32    the decay mask
 *   K    [L,K] Op      K of the chunk
 *   Fk   [L,K] fp32    dR_W, then dk's accumulator
 *   X    [L,K] Op      dW, then dR_W (operand), then Q
 *   T    [L,L] Op      T, then dM + dM^T (operand)
 *   E    [L,L] fp32    E, then dD, then the suffix sums of dseg
 *   s0..s2  3 x [L,L] fp32, contiguous:   V loop: dUt tile (Op, s0), R_U tile (Op, s1), dR_U tile (fp32, s2);
 *           then E (Op copy, bf16, s0), E T^T (s1), M (s2); then N (s0), dN (Op, s2); then dq's accumulator
 *           [L][ldKf] fp32 over s0 and s1
 *   s3   [L,64] Op     dR_U tile as the operand (bf16 only; fp32 reads s2)
 * 203 KB for fp32 operands, 172 KB for bf16 (one block per SM).
 *   1. dR_W = T^T dW; its row pass (k . dR_W, dbeta, dG; Fk = beta exp(G) dR_W); E = dR_W K^T scaled by beta_j exp(G_j)
 *   2. per 64-column V tile: dR_U = T^T dUt; row pass (dv, v . dR_U); E += dR_U R_U^T
 *   3. E T^T and M = K K^T; row pass: dA, dbeta, dD, dM + dM^T
 *   4. N = Q K^T; dN, dD += dP o N
 *   5. dk += (dM + dM^T) K + dN^T Q, dq = dN K
 *   6. row pass: dk += lam dKl, dq += exp(G) dQg, then the fused L2 norms' backward (written), dlam, dG
 *   7. dseg and its column suffix sums; row pass: dg and dbeta (written)
 * Numerics: every sum and every elementwise term in fp32 with q, k, v read exactly from global memory; only the
 * products' operands are the operand type (bf16: tensor cores, operands rounded to bf16).
 */
#include <ATen/cuda/CUDAContext.h>

#include "cuda/gated_delta/gated_delta_prep.cuh"
#include "cuda/gated_delta/gated_delta_prep.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
using namespace gdn;

template <typename Op>
struct PrepBwdParams {
  In q, k, v;
  const float *g, *beta;
  const Op* Tm;
  const float *dW, *dUt, *dQg, *dKl, *dP, *ddecay;
  void *dq, *dk, *dv;  // contiguous [B,T,H,*] in q's, k's, v's dtypes
  float *dg, *dbeta;
  int steps, nc, H, V;
  bool l2;  // q, k L2-normalised by the forward (qk_l2norm)
};

template <typename Op>
struct PrepBwdSmem {
  using G = Geo<Op>;
  static constexpr size_t vec = 0;
  static constexpr size_t D = carve(vec, sizeof(float) * 10 * kL);
  static constexpr size_t K = carve(D, sizeof(float) * kL * ldLf);
  static constexpr size_t Fk = carve(K, sizeof(Op) * kL * G::ldK);
  static constexpr size_t X = carve(Fk, sizeof(float) * kL * ldKf);
  static constexpr size_t T = carve(X, sizeof(Op) * kL * G::ldK);
  static constexpr size_t E = carve(T, sizeof(Op) * kL * G::ldL);
  static constexpr size_t s0 = carve(E, sizeof(float) * kL * ldLf);
  static constexpr size_t s1 = carve(s0, sizeof(float) * kL * ldLf);
  static constexpr size_t s2 = carve(s1, sizeof(float) * kL * ldLf);
  static constexpr size_t s3 = carve(s2, sizeof(float) * kL * ldLf);
  static constexpr size_t bytes = carve(s3, G::kBf16 ? sizeof(Op) * kL * G::ldL : 0);
  static_assert(s2 - s0 >= sizeof(float) * kL * ldKf, "dq's accumulator spans s0 and s1");
};

template <typename Op>
__global__ void __launch_bounds__(kThreads, 1) gated_delta_prep_bwd_kernel(const PrepBwdParams<Op> p) {
  using G = Geo<Op>;
  using Sm = PrepBwdSmem<Op>;
  constexpr int ldK = G::ldK, ldL = G::ldL;
  extern __shared__ __align__(128) unsigned char smem[];
  float* gs = reinterpret_cast<float*>(smem + Sm::vec);
  float *bs = gs + kL, *gam = bs + kL, *wsc = gam + kL, *lam = wsc + kL, *dG = lam + kL, *dbe = dG + kL,
        *dlam = dbe + kL, *rq = dlam + kL, *rk = rq + kL;
  float* D = reinterpret_cast<float*>(smem + Sm::D);
  Op* Ks = reinterpret_cast<Op*>(smem + Sm::K);
  float* Fk = reinterpret_cast<float*>(smem + Sm::Fk);
  Op* Xk = reinterpret_cast<Op*>(smem + Sm::X);
  Op* Ts = reinterpret_cast<Op*>(smem + Sm::T);
  float* E = reinterpret_cast<float*>(smem + Sm::E);
  float* s0 = reinterpret_cast<float*>(smem + Sm::s0);
  float* s1 = reinterpret_cast<float*>(smem + Sm::s1);
  float* s2 = reinterpret_cast<float*>(smem + Sm::s2);
  Op* Zop = G::kBf16 ? reinterpret_cast<Op*>(smem + Sm::s3) : reinterpret_cast<Op*>(s2);  // ldL (fp32: = ldLf)

  const int tid = threadIdx.x, r = tid >> 3, part = tid & 7;  // row-pass layout
  const int bch = blockIdx.x, h = bch % p.H, c = (bch / p.H) % p.nc, b = bch / (p.H * p.nc);
  const int t0 = c * kL, n = min(kL, p.steps - t0);
  const bool valid = r < n;  // this thread's row-pass row is a real step (not padding)
  const int64_t tile = static_cast<int64_t>(bch) * kL;
  const int64_t orow = (static_cast<int64_t>(b) * p.steps + t0 + r) * p.H + h;  // row r of the [B,T,H,*] outputs

  l2_factors(p.l2, p.q, p.k, b, t0, h, n, rq, rk);  // read after chunk_decays' barriers
  chunk_decays(p.g, p.beta, (static_cast<int64_t>(b) * p.steps + t0) * p.H + h, p.H, n, gs, bs, gam, wsc, lam, D);
  copy_tile(Ts, ldL, p.Tm + tile * kL, kL, kL, kL);
  load_rows<Op, kK>(Ks, ldK, p.k, b, t0, h, n, 0, rk);
  load_op(Xk, ldK, p.dW + tile * kK, kK, kL, kK, 1.f);
  __syncthreads();

  // 1. dR_W = T^T dW; k . dR_W gives dbeta and dG; Fk starts dk with beta exp(G) dR_W; E = (dR_W K^T) diag(beta exp(G)).
  mm<Op, kL, kK>(Fk, ldKf, false, 0.f, term<Op>(Ts, ldL, true, Xk, ldK, false, kL));
  __syncthreads();
  {
    const int64_t krow = valid ? row_of(p.k, b, t0 + r, h) : 0;
    float s = 0.f;
#pragma unroll 4
    for (int m = 0; m < kK / 8; ++m) {
      const int d = part + 8 * m;
      const float f = Fk[r * ldKf + d];
      if (valid) s = fmaf(ld_in(p.k, krow + d * p.k.sd), f, s);
      Xk[r * ldK + d] = from_f<Op>(f);
      Fk[r * ldKf + d] = f * wsc[r];
    }
    s = sum8(s) * rk[r];  // k^ . dR_W
    if (part == 0) {
      dbe[r] = s * gam[r];
      dG[r] = s * bs[r] * gam[r];
    }
  }
  __syncthreads();
  mm<Op, kL, kL>(E, ldLf, false, 0.f, term<Op>(Xk, ldK, false, Ks, ldK, true, kK));
  __syncthreads();
  for (int idx = tid; idx < kL * kL; idx += kThreads) {
    const int i = idx / kL, j = idx - i * kL;
    E[i * ldLf + j] *= wsc[j];
  }
  __syncthreads();

  // 2. The V tiles: dR_U = T^T dUt, dv = beta dR_U, dbeta += v . dR_U, E += dR_U R_U^T.
  Op* Xv = reinterpret_cast<Op*>(s0);
  Op* Rv = reinterpret_cast<Op*>(s1);
  for (int v0 = 0; v0 < p.V; v0 += kVT) {
    load_op(Xv, ldL, p.dUt + tile * p.V + v0, p.V, kL, kVT, 1.f);
    load_rows<Op, kVT>(Rv, ldL, p.v, b, t0, h, n, v0, bs);
    __syncthreads();
    mm<Op, kL, kVT>(s2, ldLf, false, 0.f, term<Op>(Ts, ldL, true, Xv, ldL, false, kL));
    __syncthreads();
    {
      const int64_t vrow = valid ? row_of(p.v, b, t0 + r, h) : 0;
      float s = 0.f;
#pragma unroll
      for (int m = 0; m < kVT / 8; ++m) {
        const int cc = part + 8 * m;
        const float z = s2[r * ldLf + cc];
        if (valid) {
          s = fmaf(ld_in(p.v, vrow + (v0 + cc) * p.v.sd), z, s);
          st_out(p.dv, p.v.bf16, orow * p.V + v0 + cc, z * bs[r]);
        }
        Zop[r * ldL + cc] = from_f<Op>(z);
      }
      s = sum8(s);
      if (part == 0) dbe[r] += s;
    }
    __syncthreads();
    mm<Op, kL, kL>(E, ldLf, true, 1.f, term<Op>(Zop, ldL, false, Rv, ldL, true, kVT));
    __syncthreads();
  }

  // 3. E T^T (dA = -its strictly lower part) and M = K K^T; then dbeta, dD (into E) and dM + dM^T (into T's place).
  const Op* Eop = reinterpret_cast<const Op*>(E);  // fp32: E itself (ldLf = ldL)
  if constexpr (G::kBf16) {
    to_op(reinterpret_cast<Op*>(s0), ldL, E, ldLf, kL, kL);
    Eop = reinterpret_cast<const Op*>(s0);
    __syncthreads();
  }
  mm<Op, kL, kL>(s1, ldLf, false, 0.f, term<Op>(Eop, ldL, false, Ts, ldL, true, kL));
  mm<Op, kL, kL>(s2, ldLf, false, 0.f, term<Op>(Ks, ldK, false, Ks, ldK, true, kK));
  __syncthreads();
  Op* dMs = Ts;
  {
    float s = 0.f;
#pragma unroll
    for (int m = 0; m < kL / 8; ++m) {
      const int j = part + 8 * m;
      float dd = 0.f;
      if (j < r) {
        const float a = -s1[r * ldLf + j], mk = s2[r * ldLf + j], d = D[r * ldLf + j];
        s = fmaf(a, mk * d, s);
        dd = a * bs[r] * mk;
        const Op dm = from_f<Op>(a * bs[r] * d);
        dMs[r * ldL + j] = dm;
        dMs[j * ldL + r] = dm;
      } else if (j == r) {
        dMs[r * ldL + r] = from_f<Op>(0.f);
      }
      E[r * ldLf + j] = dd;
    }
    s = sum8(s);
    if (part == 0) dbe[r] += s;
  }
  __syncthreads();

  // 4. N = Q K^T; dN = dP o D (operand, into s2), dD += dP o N.
  load_rows<Op, kK>(Xk, ldK, p.q, b, t0, h, n, 0, rq);
  __syncthreads();
  mm<Op, kL, kL>(s0, ldLf, false, 0.f, term<Op>(Xk, ldK, false, Ks, ldK, true, kK));
  __syncthreads();
  Op* dN = reinterpret_cast<Op*>(s2);
  const float* dP = p.dP + tile * kL;
  for (int idx = tid; idx < kL * kL; idx += kThreads) {
    const int i = idx / kL, j = idx - i * kL;
    if (j <= i) {
      const float gp = __ldg(dP + idx);
      dN[i * ldL + j] = from_f<Op>(gp * D[i * ldLf + j]);
      E[i * ldLf + j] += gp * s0[i * ldLf + j];
    } else {
      dN[i * ldL + j] = from_f<Op>(0.f);
    }
  }
  __syncthreads();

  // 5. dk += (dM + dM^T) K + dN^T Q;  dq = dN K (fp32 over s0 and s1).
  float* Fq = s0;
  mm<Op, kL, kK>(Fk, ldKf, true, 1.f, term<Op>(dMs, ldL, false, Ks, ldK, false, kL),
                 term<Op>(dN, ldL, true, Xk, ldK, false, kL));
  mm<Op, kL, kK>(Fq, ldKf, false, 0.f, term<Op>(dN, ldL, false, Ks, ldK, false, kL));
  __syncthreads();

  // 6. dk^ = Fk + lam dKl, dq^ = Fq + exp(G) dQg; dlam = lam (k^ . dKl), dG += exp(G) (q^ . dQg); then through the
  //    fused L2 norms (k^ = rk k, q^ = rq q) dk = rk dk^ - rk^3 (k . dk^) k and dq = rq dq^ - K rq^3 (q . dq^) q
  //    (without them dk = dk^, dq = dq^), written.
  {
    const int64_t krow = valid ? row_of(p.k, b, t0 + r, h) : 0, qrow = valid ? row_of(p.q, b, t0 + r, h) : 0;
    const float* dkl = p.dKl + (tile + r) * kK;
    const float* dqg = p.dQg + (tile + r) * kK;
    float gk[kK / 8], gq[kK / 8];  // this lane's columns of dk^ and dq^
    float sk = 0.f, sq = 0.f, nk = 0.f, nq = 0.f;
#pragma unroll
    for (int m = 0; m < kK / 8; ++m) {
      const int d = part + 8 * m;
      const float a = __ldg(dkl + d), e = __ldg(dqg + d);
      gk[m] = Fk[r * ldKf + d] + a * lam[r];
      gq[m] = Fq[r * ldKf + d] + e * gam[r];
      if (valid) {
        const float kv = ld_in(p.k, krow + d * p.k.sd), qv = ld_in(p.q, qrow + d * p.q.sd);
        sk = fmaf(kv, a, sk), sq = fmaf(qv, e, sq);
        nk = fmaf(kv, gk[m], nk), nq = fmaf(qv, gq[m], nq);
      }
    }
    sk = sum8(sk) * rk[r], sq = sum8(sq) * rq[r], nk = sum8(nk), nq = sum8(nq);
    if (part == 0) {
      dlam[r] = sk * lam[r];
      dG[r] += sq * gam[r];
    }
    if (valid) {
      const float ak = rk[r], aq = rq[r];
      const float bk = p.l2 ? ak * ak * ak * nk : 0.f, bq = p.l2 ? static_cast<float>(kK) * aq * aq * aq * nq : 0.f;
#pragma unroll 4
      for (int m = 0; m < kK / 8; ++m) {
        const int d = part + 8 * m;
        const float kv = p.l2 ? ld_in(p.k, krow + d * p.k.sd) : 0.f, qv = p.l2 ? ld_in(p.q, qrow + d * p.q.sd) : 0.f;
        st_out(p.dk, p.k.bf16, orow * kK + d, ak * gk[m] - bk * kv);
        st_out(p.dq, p.q.bf16, orow * kK + d, aq * gq[m] - bq * qv);
      }
    }
  }
  __syncthreads();

  // 7. dseg = dD o D below the diagonal (+ the Kl term on row L-1); E[k][j] = sum_{i>=k} dseg[i][j] for k > j, one
  //    thread per column; the decay term; then dg_k = sum_{j<k} E[k][j] + sum_{i>=k} dG_i.
  if (tid < kL) {
    const int j = tid;
    float acc = 0.f;
    for (int i = kL - 1; i > j; --i) {
      float x = E[i * ldLf + j] * D[i * ldLf + j];
      if (i == kL - 1) x += dlam[j];
      acc += x;
      E[i * ldLf + j] = acc;
    }
  } else if (tid == kL) {
    dG[kL - 1] += p.ddecay[bch] * gam[kL - 1];
  }
  __syncthreads();
  {
    float s = 0.f;
#pragma unroll
    for (int m = 0; m < kL / 8; ++m) {
      const int j = part + 8 * m;
      s += j < r ? E[r * ldLf + j] : dG[j];
    }
    s = sum8(s);
    if (part == 0 && valid) {
      const int64_t o = (static_cast<int64_t>(b) * p.steps + t0 + r) * p.H + h;
      p.dg[o] = s;
      p.dbeta[o] = dbe[r];
    }
  }
}

}  // namespace

std::vector<at::Tensor> gated_delta_prep_bwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& g, const at::Tensor& beta, const at::Tensor& T,
                                             const at::Tensor& dW, const at::Tensor& dUt, const at::Tensor& dQg,
                                             const at::Tensor& dKl, const at::Tensor& dP, const at::Tensor& ddecay,
                                             bool qk_l2norm) {
  const c10::cuda::CUDAGuard guard(q.device());
  check_prep_inputs("gated_delta_prep_bwd", q, k, v, g, beta);
  const int64_t B = q.size(0), steps = q.size(1), H = q.size(2), V = v.size(3), nc = (steps + kL - 1) / kL;
  const bool bf16 = T.scalar_type() == at::kBFloat16;
  TORCH_CHECK(T.is_cuda() && T.is_contiguous() && (bf16 || T.scalar_type() == at::kFloat) &&
                  T.sizes() == at::IntArrayRef({B, nc, H, kL, kL}),
              "gated_delta_prep_bwd: T must be the forward's contiguous [B,nc,H,L,L] float32 or bfloat16 tensor");
  const std::pair<const at::Tensor*, std::vector<int64_t>> grads[] = {
      {&dW, {B, nc, H, kL, kK}}, {&dUt, {B, nc, H, kL, V}}, {&dQg, {B, nc, H, kL, kK}},
      {&dKl, {B, nc, H, kL, kK}}, {&dP, {B, nc, H, kL, kL}}, {&ddecay, {B, nc, H}}};
  for (const auto& [t, shape] : grads)
    TORCH_CHECK(t->is_cuda() && t->is_contiguous() && t->scalar_type() == at::kFloat &&
                    t->sizes() == at::IntArrayRef(shape),
                "gated_delta_prep_bwd: the output gradients must be contiguous float32 CUDA tensors shaped as the "
                "forward's outputs, got ", t->sizes());
  auto dq = ops::empty_output({B, steps, H, kK}, q.options());
  auto dk = ops::empty_output({B, steps, H, kK}, k.options());
  auto dv = ops::empty_output({B, steps, H, V}, v.options());
  auto dg = ops::empty_output({B, steps, H}, g.options());
  auto dbeta = ops::empty_output({B, steps, H}, beta.options());
  auto run = [&](auto tag) {
    using Op = decltype(tag);
    PrepBwdParams<Op> p{};
    p.q = in_view(q), p.k = in_view(k), p.v = in_view(v);
    p.g = g.data_ptr<float>(), p.beta = beta.data_ptr<float>();
    p.Tm = reinterpret_cast<const Op*>(T.data_ptr());
    p.dW = dW.data_ptr<float>(), p.dUt = dUt.data_ptr<float>(), p.dQg = dQg.data_ptr<float>();
    p.dKl = dKl.data_ptr<float>(), p.dP = dP.data_ptr<float>(), p.ddecay = ddecay.data_ptr<float>();
    p.dq = dq.data_ptr(), p.dk = dk.data_ptr(), p.dv = dv.data_ptr();
    p.dg = dg.data_ptr<float>(), p.dbeta = dbeta.data_ptr<float>();
    p.steps = int(steps), p.nc = int(nc), p.H = int(H), p.V = int(V), p.l2 = qk_l2norm;
    const size_t smem = PrepBwdSmem<Op>::bytes;
    C10_CUDA_CHECK(cudaFuncSetAttribute(gated_delta_prep_bwd_kernel<Op>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
    gated_delta_prep_bwd_kernel<Op><<<int(B * nc * H), kThreads, smem, at::cuda::getCurrentCUDAStream()>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (bf16) run(__nv_bfloat16{});
  else run(float{});
  return {dq, dk, dv, dg, dbeta};
}

}  // namespace elman::cuda
