/* Mamba2's SSD scan, backward: one block per (batch b, head h) walks the chunks in reverse, carrying dh (the
 * gradient of the state leaving the chunk, fp32 [P,N] in shared memory; dh_T or zero at the start), with the
 * entering states h_c saved by the forward.
 *
 * Per chunk, with a, exp(a), w as in the forward, decay_ij = exp(a_i - a_j) (j <= i, else 0) and G = C B^T:
 *   phase 1  G = C B^T;  dyx = dy x^T [L,L];  BD = B dh^T [L,P]
 *   phase 2  M_ij = G_ij decay_ij dt_j,  dG_ij = dyx_ij decay_ij dt_j  (operand type),  E_ij = G_ij decay_ij dyx_ij;
 *            per row: rowx_i = x_i . BD_i (= x_i^T dh B_i), dD += dy_i . x_i;  x <- w x,  dye = exp(a) dy
 *   phase 3  dC = dG B + dye h_c,  dB = dG^T C + (w x) dh  -> added into dC, dB [B, nc L, N] (shared by the heads)
 *            with float4 atomics (bf16: through per-warp scratch in G's buffer, free once E's sums are taken);
 *            dx' = M^T dy;  CH = C h_c^T [L,P];  colE_j = sum_i E_ij,  rowQ_i = sum_{j<i} E_ij dt_j
 *   phase 4  dh = exp(a_{L-1}) dh + dye^T C;  dx = dx' + w BD + D dy (rows t < T);  chdot_i = dy_i . CH_i
 *   phase 5  (warp 0) da_i = rowQ_i - dt_i (colE_i - E_ii) + exp(a_i) chdot_i - w_i rowx_i,
 *            da_{L-1} += exp(a_{L-1}) <dh_old, h_c> + sum_j w_j rowx_j;  dl_k = sum_{i>=k} da_i (double);
 *            ddt_k = colE_k + exp(a_{L-1} - a_k) rowx_k + A dl_k;  dA += sum_k dt_k dl_k.
 *            The other warps refresh the operand copy of dh (bf16).
 * (Derivation: ops/ssd/README.md.) Finally dh0 = dh, and per-(b,h) partials of dA and dD.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/ssd/ssd.cuh"
#include "cuda/ssd/ssd.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
using namespace ssd;

template <typename S>
struct BwdParams {
  const S* x;            // [B,T,H,P]
  const float* dt;       // [B,T,H]
  const float* A;        // [H]
  const S* Bm;           // [B,T,N]
  const S* Cm;           // [B,T,N]
  const float* D;        // [H]
  const float* states;   // [B,H,nc,P,N]
  const S* dy;           // [B,T,H,P]
  const float* dh_T;     // [B,H,P,N] or null (zero)
  S* dx;                 // [B,T,H,P]
  float* ddt;            // [B,T,H]
  float* dB;             // [B,nc L,N] zeroed; every head adds its part
  float* dC;             // [B,nc L,N]
  float* dAp;            // [B,H]
  float* dDp;            // [B,H]
  float* dh0;            // [B,H,P,N]
  int T, H, nc;
};

template <typename S>
struct BwdSmem {
  static constexpr int L = Cfg<S>::L, kPad = Cfg<S>::kPad;
  static constexpr int ldN = kN + kPad, ldP = kP + kPad, ldL = L + kPad, fN = kN + 4, fP = kP + 4;
  static_assert(L <= kP, "the [L,L] fp32 tiles use the [L,P] buffers' pitch");
  static constexpr bool kCopy = !std::is_same<S, float>::value;  // dh has a separate operand-type copy
  static_assert(kCopy || ldN == fN, "fp32 operands read the fp32 dh in place");
  static constexpr size_t oB = 0;                                       // B   [L][ldN]
  static constexpr size_t oC = align128(oB + sizeof(S) * L * ldN);      // C   [L][ldN]
  static constexpr size_t oX = align128(oC + sizeof(S) * L * ldN);      // x, then w x  [L][ldP]
  static constexpr size_t oDy = align128(oX + sizeof(S) * L * ldP);     // dy  [L][ldP]
  static constexpr size_t oDye = align128(oDy + sizeof(S) * L * ldP);   // exp(a) dy  [L][ldP]
  static constexpr size_t oHc = align128(oDye + sizeof(S) * L * ldP);   // h_c [P][ldN]
  static constexpr size_t oDh = align128(oHc + sizeof(S) * kP * ldN);   // dh  fp32 [P][fN]
  static constexpr size_t oDhend = align128(oDh + sizeof(float) * kP * fN);
  static constexpr size_t oDhb = kCopy ? oDhend : oDh;                  // dh  [P][ldN] operand type
  static constexpr size_t oG = kCopy ? align128(oDhb + sizeof(S) * kP * ldN) : oDhend;  // G, then E  fp32 [L][fP]
  static constexpr size_t oY = align128(oG + sizeof(float) * L * fP);   // dyx, then dx'  fp32 [L][fP]
  static constexpr size_t oBD = align128(oY + sizeof(float) * L * fP);  // B dh^T  fp32 [L][fP]
  static constexpr size_t oCH = align128(oBD + sizeof(float) * L * fP); // C h_c^T fp32 [L][fP]
  static constexpr size_t oM = align128(oCH + sizeof(float) * L * fP);  // M   [L][ldL]
  static constexpr size_t oDG = align128(oM + sizeof(S) * L * ldL);     // dG  [L][ldL]
  static constexpr size_t oAd = align128(oDG + sizeof(S) * L * ldL);    // a   double [L]
  // float [L] each: dt, exp(a), exp(a_{L-1} - a), w, rowx, rowQ, colE, E_ii, chdot; then float [kWarps]
  static constexpr size_t oVec = align128(oAd + sizeof(double) * L);
  static constexpr int kVecs = 9;
  static constexpr size_t oRed = align128(oVec + sizeof(float) * L * kVecs);
  static constexpr size_t bytes = align128(oRed + sizeof(float) * kWarps);
};

template <typename S>
__global__ void __launch_bounds__(kThreads, 1) ssd_bwd_kernel(const BwdParams<S> p) {
  using Sm = BwdSmem<S>;
  using Op = Mma<S>;
  constexpr int L = Sm::L, ldN = Sm::ldN, ldP = Sm::ldP, ldL = Sm::ldL, fN = Sm::fN, fP = Sm::fP;
  extern __shared__ __align__(128) unsigned char smem[];
  S* Bs = reinterpret_cast<S*>(smem + Sm::oB);
  S* Cs = reinterpret_cast<S*>(smem + Sm::oC);
  S* xs = reinterpret_cast<S*>(smem + Sm::oX);
  S* dys = reinterpret_cast<S*>(smem + Sm::oDy);
  S* dye = reinterpret_cast<S*>(smem + Sm::oDye);
  S* hcb = reinterpret_cast<S*>(smem + Sm::oHc);
  float* dhs = reinterpret_cast<float*>(smem + Sm::oDh);
  S* dhb = reinterpret_cast<S*>(smem + Sm::oDhb);
  float* Gs = reinterpret_cast<float*>(smem + Sm::oG);
  float* Ys = reinterpret_cast<float*>(smem + Sm::oY);
  float* BDs = reinterpret_cast<float*>(smem + Sm::oBD);
  float* CHs = reinterpret_cast<float*>(smem + Sm::oCH);
  S* Ms = reinterpret_cast<S*>(smem + Sm::oM);
  S* dGs = reinterpret_cast<S*>(smem + Sm::oDG);
  double* ad = reinterpret_cast<double*>(smem + Sm::oAd);
  float* vec = reinterpret_cast<float*>(smem + Sm::oVec);
  float *dts = vec, *ea = vec + L, *e2e = vec + 2 * L, *ws = vec + 3 * L, *rowx = vec + 4 * L, *rowQ = vec + 5 * L,
        *colE = vec + 6 * L, *Ed = vec + 7 * L, *chdot = vec + 8 * L;
  float* red = reinterpret_cast<float*>(smem + Sm::oRed);

  const int bh = blockIdx.x, b = bh / p.H, h = bh - b * p.H, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const float A_h = p.A[h], D_h = p.D[h];
  const int64_t state_base = static_cast<int64_t>(bh) * kP * kN;
  const int Tp = p.nc * L;                      // rows of the padded dB, dC
  float dD_acc = 0.f;                           // lane 0 of each warp: its rows' dy . x
  double dA_acc = 0.0;                          // warp 0: per lane

  for (int i = tid; i < kP * kN; i += kThreads) {
    const int r = i / kN, n = i - r * kN;
    const float v = p.dh_T ? p.dh_T[state_base + i] : 0.f;
    dhs[r * fN + n] = v;
    if constexpr (Sm::kCopy) dhb[r * ldN + n] = from_f<S>(v);
  }
  __syncthreads();  // the first chunk's <dh, h_c> reads other threads' elements

  for (int c = p.nc - 1; c >= 0; --c) {
    const int t0 = c * L, valid = min(L, p.T - t0);
    const int64_t row0 = static_cast<int64_t>(b) * p.T + t0;
    // Every buffer written here was last read before the previous iteration's final barrier.
    load_tile<S, L, kN>(Bs, ldN, p.Bm + row0 * kN, kN, valid);
    load_tile<S, L, kN>(Cs, ldN, p.Cm + row0 * kN, kN, valid);
    load_tile<S, L, kP>(xs, ldP, p.x + (row0 * p.H + h) * kP, static_cast<int64_t>(p.H) * kP, valid);
    load_tile<S, L, kP>(dys, ldP, p.dy + (row0 * p.H + h) * kP, static_cast<int64_t>(p.H) * kP, valid);
    if (tid < L) dts[tid] = tid < valid ? p.dt[(row0 + tid) * p.H + h] : 0.f;
    {  // h_c into the operand buffer, and <dh, h_c> (dh: the gradient of the state leaving this chunk)
      const float* st = p.states + (static_cast<int64_t>(bh) * p.nc + c) * kP * kN;
      float hd = 0.f;
      for (int i = tid * 4; i < kP * kN; i += kThreads * 4) {
        const int r = i / kN, n = i - r * kN;
        const float4 v = __ldg(reinterpret_cast<const float4*>(st + i));
        const float4 d = *reinterpret_cast<const float4*>(dhs + r * fN + n);
        hd += v.x * d.x + v.y * d.y + v.z * d.z + v.w * d.w;
        S* o = hcb + r * ldN + n;
        o[0] = from_f<S>(v.x), o[1] = from_f<S>(v.y), o[2] = from_f<S>(v.z), o[3] = from_f<S>(v.w);
      }
      hd = warp_sum(hd);
      if (lane == 0) red[warp] = hd;
    }
    __syncthreads();

    // Phase 1: the decays (warp 0); G = C B^T, dyx = dy x^T, BD = B dh^T.
    if (warp == 0) chunk_decays<L>(dts, A_h, ad, ea, e2e, ws);
    for_my_tiles<L, L>(0, [&](int mt, int nt) {
      typename Op::Acc acc;
      Op::zero(acc);
      Op::template mma<true, false, kN>(acc, Cs, ldN, mt, Bs, ldN, nt);
      Op::store(Gs + 16 * mt * fP + 16 * nt, fP, acc);
    });
    for_my_tiles<L, L>(tiles_of<L, L>(), [&](int mt, int nt) {
      typename Op::Acc acc;
      Op::zero(acc);
      Op::template mma<true, false, kP>(acc, dys, ldP, mt, xs, ldP, nt);
      Op::store(Ys + 16 * mt * fP + 16 * nt, fP, acc);
    });
    for_my_tiles<L, kP>(2 * tiles_of<L, L>(), [&](int mt, int nt) {
      typename Op::Acc acc;
      Op::zero(acc);
      Op::template mma<true, false, kN>(acc, Bs, ldN, mt, dhb, ldN, nt);
      Op::store(BDs + 16 * mt * fP + 16 * nt, fP, acc);
    });
    __syncthreads();

    // Phase 2: M, dG, E (in place of G); the row sums that need x, then x <- w x and dye.
    for (int i = tid; i < L * L; i += kThreads) {
      const int r = i / L, j = i - r * L;
      const float dec = decay(ad, r, j), g = Gs[r * fP + j], q = Ys[r * fP + j];
      Ms[r * ldL + j] = from_f<S>(g * dec * dts[j]);
      dGs[r * ldL + j] = from_f<S>(q * dec * dts[j]);
      Gs[r * fP + j] = g * dec * q;
    }
    for (int r = warp; r < L; r += kWarps) {
      float sx = 0.f, sd = 0.f;
      for (int q = lane; q < kP; q += 32) {
        const float xv = to_f(xs[r * ldP + q]), dv = to_f(dys[r * ldP + q]);
        sx += xv * BDs[r * fP + q];
        sd += dv * xv;
        xs[r * ldP + q] = from_f<S>(xv * ws[r]);
        dye[r * ldP + q] = from_f<S>(dv * ea[r]);
      }
      sx = warp_sum(sx), sd = warp_sum(sd);
      if (lane == 0) {
        rowx[r] = sx;
        dD_acc += sd;
      }
    }
    __syncthreads();

    // Phase 3: the sums of E (warps 0-3), then the products.
    if (tid < L) {
      float s = 0.f;
      for (int i = tid; i < L; ++i) s += Gs[i * fP + tid];
      colE[tid] = s;
      Ed[tid] = Gs[tid * fP + tid];
    } else if (tid < 2 * L) {
      const int r = tid - L;
      float s = 0.f;
      for (int j = 0; j < r; ++j) s += Gs[r * fP + j] * dts[j];
      rowQ[r] = s;
    }
    // bf16: E's buffer becomes the warps' scratch for the atomic adds of dC and dB (16 x 256 floats fit in it).
    static_assert(std::is_same<S, float>::value || kWarps * 256 <= L * fP,
                  "the atomic scratch does not fit in G's buffer");
    float* scratch = Gs + warp * 256;
    if constexpr (!std::is_same<S, float>::value) __syncthreads();
    for_my_tiles<L, kN>(0, [&](int mt, int nt) {  // dC = dG B + dye h_c
      typename Op::Acc acc;
      Op::zero(acc);
      Op::template mma<true, true, L>(acc, dGs, ldL, mt, Bs, ldN, nt);
      Op::template mma<true, true, kP>(acc, dye, ldP, mt, hcb, ldN, nt);
      Op::atomic_add(p.dC + (static_cast<int64_t>(b) * Tp + t0 + 16 * mt) * kN + 16 * nt, kN, acc, scratch);
    });
    for_my_tiles<L, kN>(tiles_of<L, kN>(), [&](int mt, int nt) {  // dB = dG^T C + (w x) dh
      typename Op::Acc acc;
      Op::zero(acc);
      Op::template mma<false, true, L>(acc, dGs, ldL, mt, Cs, ldN, nt);
      Op::template mma<true, true, kP>(acc, xs, ldP, mt, dhb, ldN, nt);
      Op::atomic_add(p.dB + (static_cast<int64_t>(b) * Tp + t0 + 16 * mt) * kN + 16 * nt, kN, acc, scratch);
    });
    for_my_tiles<L, kP>(2 * tiles_of<L, kN>(), [&](int mt, int nt) {  // dx' = M^T dy
      typename Op::Acc acc;
      Op::zero(acc);
      Op::template mma<false, true, L>(acc, Ms, ldL, mt, dys, ldP, nt);
      Op::store(Ys + 16 * mt * fP + 16 * nt, fP, acc);
    });
    for_my_tiles<L, kP>(2 * tiles_of<L, kN>() + tiles_of<L, kP>(), [&](int mt, int nt) {  // CH = C h_c^T
      typename Op::Acc acc;
      Op::zero(acc);
      Op::template mma<true, false, kN>(acc, Cs, ldN, mt, hcb, ldN, nt);
      Op::store(CHs + 16 * mt * fP + 16 * nt, fP, acc);
    });
    __syncthreads();

    // Phase 4: dh = exp(a_{L-1}) dh + dye^T C (dh's operand copy was last read in phase 3); dx; chdot.
    const float chunk_decay = ea[L - 1];
    for_my_tiles<kP, kN>(0, [&](int mt, int nt) {
      typename Op::Acc acc;
      Op::load(acc, dhs + 16 * mt * fN + 16 * nt, fN);
      Op::scale(acc, chunk_decay);
      Op::template mma<false, true, L>(acc, dye, ldP, mt, Cs, ldN, nt);
      Op::store(dhs + 16 * mt * fN + 16 * nt, fN, acc);
    });
    for (int i = tid; i < valid * kP; i += kThreads) {
      const int r = i / kP, q = i - r * kP;
      p.dx[((row0 + r) * p.H + h) * kP + q] =
          from_f<S>(Ys[r * fP + q] + ws[r] * BDs[r * fP + q] + D_h * to_f(dys[r * ldP + q]));
    }
    for (int r = warp; r < L; r += kWarps) {
      float s = 0.f;
      for (int q = lane; q < kP; q += 32) s += to_f(dys[r * ldP + q]) * CHs[r * fP + q];
      s = warp_sum(s);
      if (lane == 0) chdot[r] = s;
    }
    __syncthreads();

    // Phase 5: da, dl, ddt, dA (warp 0); the operand copy of the new dh (the other warps).
    if (warp == 0) {
      constexpr int E = L / 32;  // steps per lane: lane E .. lane E + E - 1
      const float hdot = warp_sum(lane < kWarps ? red[lane] : 0.f);
      float da[E], fsum = 0.f;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const int i = lane * E + e;
        const float f = ws[i] * rowx[i];
        da[e] = rowQ[i] - dts[i] * (colE[i] - Ed[i]) + ea[i] * chdot[i] - f;
        fsum += f;
      }
      fsum = warp_sum(fsum);
      if (lane == 31) da[E - 1] += ea[L - 1] * hdot + fsum;
      double dl[E], s = 0;  // suffix sums: within the lane, then over the later lanes
#pragma unroll
      for (int e = E - 1; e >= 0; --e) dl[e] = s += da[e];
      double incl = s;
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const double o = __shfl_down_sync(kAll, incl, off);
        if (lane + off < 32) incl += o;
      }
      double after = __shfl_down_sync(kAll, incl, 1);
      if (lane == 31) after = 0;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const int i = lane * E + e;
        const double dli = dl[e] + after;
        dA_acc += static_cast<double>(dts[i]) * dli;
        if (i < valid) p.ddt[(row0 + i) * p.H + h] = colE[i] + e2e[i] * rowx[i] + static_cast<float>(A_h * dli);
      }
    } else if constexpr (Sm::kCopy) {
      for (int i = tid - 32; i < kP * kN; i += kThreads - 32) {
        const int r = i / kN, n = i - r * kN;
        dhb[r * ldN + n] = from_f<S>(dhs[r * fN + n]);
      }
    }
    __syncthreads();
  }

  for (int i = tid * 4; i < kP * kN; i += kThreads * 4) {
    const int r = i / kN, n = i - r * kN;
    *reinterpret_cast<float4*>(p.dh0 + state_base + i) = *reinterpret_cast<const float4*>(dhs + r * fN + n);
  }
  if (lane == 0) red[warp] = dD_acc;  // red's last reader (phase 5) finished before the final barrier
  if (warp == 0) dA_acc = warp_sum(dA_acc);
  __syncthreads();
  if (tid == 0) {
    float s = 0.f;
    for (int w = 0; w < kWarps; ++w) s += red[w];
    p.dDp[bh] = s;
    p.dAp[bh] = static_cast<float>(dA_acc);
  }
}

template <typename S>
void launch_bwd(const BwdParams<S>& p, int64_t blocks) {
  constexpr size_t smem = BwdSmem<S>::bytes;
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  TORCH_CHECK(smem <= prop->sharedMemPerBlockOptin, "ssd_bwd: the kernel needs ", smem,
              " bytes of shared memory per block, this GPU allows ", prop->sharedMemPerBlockOptin,
              "; use --impl chunked");
  C10_CUDA_CHECK(cudaFuncSetAttribute(ssd_bwd_kernel<S>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem)));
  ssd_bwd_kernel<S><<<static_cast<unsigned>(blocks), kThreads, smem, at::cuda::getCurrentCUDAStream()>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

std::vector<at::Tensor> ssd_bwd(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& Bm,
                                const at::Tensor& Cm, const at::Tensor& D, const at::Tensor& states,
                                const at::Tensor& dy_in, const at::Tensor& dh_T_in) {
  const int64_t L = ssd_kernel_chunk(x.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), nc = (T + L - 1) / L;
  TORCH_CHECK(states.sizes() == at::IntArrayRef({B, H, nc, kP, kN}) && states.scalar_type() == at::kFloat,
              "ssd_bwd: states must be float32 [", B, ",", H, ",", nc, ",", kP, ",", kN, "], got ", states.sizes());
  // An unused output's gradient arrives undefined: y's as zeros, h_T's as a null pointer.
  at::Tensor dy = dy_in.defined() ? dy_in.to(x.scalar_type()).contiguous() : at::zeros_like(x);
  if (reinterpret_cast<uintptr_t>(dy.data_ptr()) % 16 != 0) dy = dy.clone();
  at::Tensor dh_T = dh_T_in.defined() ? dh_T_in.to(at::kFloat).contiguous() : at::Tensor();
  TORCH_CHECK(dy.sizes() == x.sizes() && (!dh_T.defined() || dh_T.sizes() == at::IntArrayRef({B, H, kP, kN})),
              "ssd_bwd: the gradients must match y ", x.sizes(), " and h_T");
  const std::initializer_list<const at::Tensor*> all = {&x, &dt, &A, &Bm, &Cm, &D, &states, &dy, &dh_T};
  for (const at::Tensor* t : all) {
    if (!t->defined()) continue;
    ELMAN_CHECK_CUDA_TENSOR(*t);
    TORCH_CHECK(t->device() == x.device(), "ssd_bwd: every input must be on x's device");
  }
  auto f32 = x.options().dtype(at::kFloat);
  auto dx = ops::empty_output({B, T, H, kP}, x.options());
  auto ddt = ops::empty_output({B, T, H}, f32);
  auto dB = at::zeros({B, nc * L, kN}, f32);  // the heads add into them (atomics: the order of the adds varies)
  auto dC = at::zeros({B, nc * L, kN}, f32);
  auto dAp = ops::empty_output({B, H}, f32);
  auto dDp = ops::empty_output({B, H}, f32);
  auto dh0 = ops::empty_output({B, H, kP, kN}, f32);
  auto run = [&](auto tag) {
    using S = typename decltype(tag)::type;
    using Src = std::conditional_t<std::is_same<S, bf16>::value, at::BFloat16, float>;
    BwdParams<S> p{};
    p.x = reinterpret_cast<const S*>(x.data_ptr<Src>());
    p.Bm = reinterpret_cast<const S*>(Bm.data_ptr<Src>());
    p.Cm = reinterpret_cast<const S*>(Cm.data_ptr<Src>());
    p.dy = reinterpret_cast<const S*>(dy.data_ptr<Src>());
    p.dx = reinterpret_cast<S*>(dx.data_ptr<Src>());
    p.dt = dt.data_ptr<float>();
    p.A = A.data_ptr<float>();
    p.D = D.data_ptr<float>();
    p.states = states.data_ptr<float>();
    p.dh_T = dh_T.defined() ? dh_T.data_ptr<float>() : nullptr;
    p.ddt = ddt.data_ptr<float>();
    p.dB = dB.data_ptr<float>();
    p.dC = dC.data_ptr<float>();
    p.dAp = dAp.data_ptr<float>();
    p.dDp = dDp.data_ptr<float>();
    p.dh0 = dh0.data_ptr<float>();
    p.T = static_cast<int>(T), p.H = static_cast<int>(H), p.nc = static_cast<int>(nc);
    launch_bwd(p, B * H);
  };
  if (x.scalar_type() == at::kBFloat16) run(Tag<bf16>{});
  else run(Tag<float>{});
  return {dx, ddt, dAp.sum(0), dB.narrow(1, 0, T), dC.narrow(1, 0, T), dDp.sum(0), dh0};
}

}  // namespace elman::cuda
