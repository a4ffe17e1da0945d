/* Mamba2's SSD scan, forward: one block per (batch b, head h) walks the chunks of L steps in order, carrying the
 * state h [P,N] in fp32 shared memory.
 *
 * Per chunk, with dt, x, B, C of its L steps (zero beyond T), a_i = sum_{k<=i} dt_k A (ssd.cuh's chunk_decays)
 * and w_j = exp(a_{L-1} - a_j) dt_j:
 *   phase 1  G = C B^T [L,L];  Y = C h^T [L,P]  (h: the state entering the chunk, in the operand type)
 *   phase 2  M_ij = G_ij exp(a_i - a_j) dt_j for j <= i, else 0 (operand type);  Y_i = exp(a_i) Y_i + D x_i;
 *            xw_j = w_j x_j (operand type)
 *   phase 3  Y += M x  -> y;   h = exp(a_{L-1}) h + xw^T B
 *   phase 4  y (rows t < T) to global; the operand copy of h refreshed (bf16)
 * Before phase 1 the entering state is written to `states` (fp32) for the backward. The chunk inputs are
 * double-buffered: chunk c + 1's B, C, x, dt arrive by cp.async into the other stage while chunk c computes.
 * Tiles per phase (L = 64): 32 products of K = 128, then 48 of K = 64, over 16 warps.
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
struct FwdParams {
  const S* x;          // [B,T,H,P]
  const float* dt;     // [B,T,H]
  const float* A;      // [H]
  const S* Bm;         // [B,T,N]
  const S* Cm;         // [B,T,N]
  const float* D;      // [H]
  const float* h0;     // [B,H,P,N] or null (zeros)
  S* y;                // [B,T,H,P]
  float* h_T;          // [B,H,P,N]
  float* states;       // [B,H,nc,P,N]
  int T, H, nc;
};

// Shared-memory layout (byte offsets). ld*: row pitches in elements of the operand type, f*: of fp32 buffers.
template <typename S>
struct FwdSmem {
  static constexpr int L = Cfg<S>::L, kPad = Cfg<S>::kPad;
  static constexpr int ldN = kN + kPad, ldP = kP + kPad, ldL = L + kPad, fN = kN + 4, fP = kP + 4, fL = L + 4;
  static constexpr bool kCopy = !std::is_same<S, float>::value;  // h has a separate operand-type copy
  static_assert(kCopy || ldN == fN, "fp32 operands read the fp32 state in place");
  // Two stages of the chunk inputs (chunk c in stage c % 2, the next one arriving in the other), each
  // B, C [L][ldN], x [L][ldP], dt float [L].
  static constexpr size_t oB = 0;
  static constexpr size_t oC = align128(oB + sizeof(S) * L * ldN);
  static constexpr size_t oX = align128(oC + sizeof(S) * L * ldN);
  static constexpr size_t oDt = align128(oX + sizeof(S) * L * ldP);
  static constexpr size_t kStage = align128(oDt + sizeof(float) * L);
  static constexpr size_t oXw = 2 * kStage;                              // xw [L][ldP]
  static constexpr size_t oH = align128(oXw + sizeof(S) * L * ldP);      // h  fp32 [P][fN]
  static constexpr size_t oHend = align128(oH + sizeof(float) * kP * fN);
  static constexpr size_t oHb = kCopy ? oHend : oH;                      // h  [P][ldN] operand type
  static constexpr size_t oG = kCopy ? align128(oHb + sizeof(S) * kP * ldN) : oHend;  // G fp32 [L][fL]
  static constexpr size_t oY = align128(oG + sizeof(float) * L * fL);    // Y  fp32 [L][fP]
  static constexpr size_t oM = align128(oY + sizeof(float) * L * fP);    // M  [L][ldL]
  static constexpr size_t oAd = align128(oM + sizeof(S) * L * ldL);      // a  double [L]
  static constexpr size_t oEa = align128(oAd + sizeof(double) * L);      // exp(a), exp(a_{L-1} - a), w: float [L]
  static constexpr size_t oE2e = align128(oEa + sizeof(float) * L);
  static constexpr size_t oW = align128(oE2e + sizeof(float) * L);
  static constexpr size_t bytes = align128(oW + sizeof(float) * L);
};

template <typename S>
__global__ void __launch_bounds__(kThreads, 1) ssd_fwd_kernel(const FwdParams<S> p) {
  using Sm = FwdSmem<S>;
  using Op = Mma<S>;
  constexpr int L = Sm::L, ldN = Sm::ldN, ldP = Sm::ldP, ldL = Sm::ldL, fN = Sm::fN, fP = Sm::fP, fL = Sm::fL;
  extern __shared__ __align__(128) unsigned char smem[];
  S* xw = reinterpret_cast<S*>(smem + Sm::oXw);
  float* hs = reinterpret_cast<float*>(smem + Sm::oH);
  S* hb = reinterpret_cast<S*>(smem + Sm::oHb);
  float* Gs = reinterpret_cast<float*>(smem + Sm::oG);
  float* Ys = reinterpret_cast<float*>(smem + Sm::oY);
  S* Ms = reinterpret_cast<S*>(smem + Sm::oM);
  double* ad = reinterpret_cast<double*>(smem + Sm::oAd);
  float* ea = reinterpret_cast<float*>(smem + Sm::oEa);
  float* e2e = reinterpret_cast<float*>(smem + Sm::oE2e);
  float* ws = reinterpret_cast<float*>(smem + Sm::oW);

  const int bh = blockIdx.x, b = bh / p.H, h = bh - b * p.H, tid = threadIdx.x, warp = tid >> 5;
  const float A_h = p.A[h], D_h = p.D[h];
  const int64_t state_base = static_cast<int64_t>(bh) * kP * kN;

  for (int i = tid; i < kP * kN; i += kThreads) {
    const int r = i / kN, n = i - r * kN;
    const float v = p.h0 ? p.h0[state_base + i] : 0.f;
    hs[r * fN + n] = v;
    if constexpr (Sm::kCopy) hb[r * ldN + n] = from_f<S>(v);
  }
  // Chunk c's B, C, x and dt into stage `stage` (asynchronous; zeros beyond T).
  auto fetch = [&](int c, int stage) {
    unsigned char* base = smem + stage * Sm::kStage;
    const int t0 = c * L, valid = min(L, p.T - t0);
    const int64_t row0 = static_cast<int64_t>(b) * p.T + t0;
    async_tile<S, L, kN>(reinterpret_cast<S*>(base + Sm::oB), ldN, p.Bm + row0 * kN, kN, valid);
    async_tile<S, L, kN>(reinterpret_cast<S*>(base + Sm::oC), ldN, p.Cm + row0 * kN, kN, valid);
    async_tile<S, L, kP>(reinterpret_cast<S*>(base + Sm::oX), ldP, p.x + (row0 * p.H + h) * kP,
                         static_cast<int64_t>(p.H) * kP, valid);
    float* dts = reinterpret_cast<float*>(base + Sm::oDt);
    if (tid < L) {
      if (tid < valid) cp_async4(dts + tid, p.dt + (row0 + tid) * p.H + h);
      else dts[tid] = 0.f;
    }
    cp_async_commit();
  };
  fetch(0, 0);
  __syncthreads();  // chunk 0 saves h from other threads' elements

  for (int c = 0; c < p.nc; ++c) {
    const int t0 = c * L, valid = min(L, p.T - t0);
    const int64_t row0 = static_cast<int64_t>(b) * p.T + t0;  // (b, t0) as a row of [B*T]
    unsigned char* stage = smem + (c & 1) * Sm::kStage;
    const S* Bs = reinterpret_cast<const S*>(stage + Sm::oB);
    const S* Cs = reinterpret_cast<const S*>(stage + Sm::oC);
    const S* xs = reinterpret_cast<const S*>(stage + Sm::oX);
    const float* dts = reinterpret_cast<const float*>(stage + Sm::oDt);
    float* st = p.states + (static_cast<int64_t>(bh) * p.nc + c) * kP * kN;  // the state entering chunk c
    for (int i = tid * 4; i < kP * kN; i += kThreads * 4) {
      const int r = i / kN, n = i - r * kN;
      *reinterpret_cast<float4*>(st + i) = *reinterpret_cast<const float4*>(hs + r * fN + n);
    }
    cp_async_wait_all();
    __syncthreads();
    // The other stage was last read in the previous chunk's phase 3, before its barrier.
    if (c + 1 < p.nc) fetch(c + 1, (c + 1) & 1);

    // Phase 1: the decays (warp 0), G = C B^T, Y = C h^T.
    if (warp == 0) chunk_decays<L>(dts, A_h, ad, ea, e2e, ws);
    for_my_tiles<L, L>(0, [&](int mt, int nt) {
      typename Op::Acc acc;
      Op::zero(acc);
      Op::template mma<true, false, kN>(acc, Cs, ldN, mt, Bs, ldN, nt);
      Op::store(Gs + 16 * mt * fL + 16 * nt, fL, acc);
    });
    for_my_tiles<L, kP>(tiles_of<L, L>(), [&](int mt, int nt) {
      typename Op::Acc acc;
      Op::zero(acc);
      Op::template mma<true, false, kN>(acc, Cs, ldN, mt, hb, ldN, nt);
      Op::store(Ys + 16 * mt * fP + 16 * nt, fP, acc);
    });
    __syncthreads();

    // Phase 2: M, the inter-chunk term and D x into Y, xw.
    for (int i = tid; i < L * L; i += kThreads) {
      const int r = i / L, j = i - r * L;
      Ms[r * ldL + j] = from_f<S>(Gs[r * fL + j] * decay(ad, r, j) * dts[j]);
    }
    for (int i = tid; i < L * kP; i += kThreads) {
      const int r = i / kP, q = i - r * kP;
      const float xv = to_f(xs[r * ldP + q]);
      Ys[r * fP + q] = ea[r] * Ys[r * fP + q] + D_h * xv;
      xw[r * ldP + q] = from_f<S>(xv * ws[r]);
    }
    __syncthreads();

    // Phase 3: Y += M x; h = exp(a_{L-1}) h + xw^T B (reads nothing of h but its own tiles: for fp32, h is also
    // phase 1's operand, read before the barrier above).
    for_my_tiles<L, kP>(0, [&](int mt, int nt) {
      typename Op::Acc acc;
      Op::load(acc, Ys + 16 * mt * fP + 16 * nt, fP);
      Op::template mma<true, true, L>(acc, Ms, ldL, mt, xs, ldP, nt);
      Op::store(Ys + 16 * mt * fP + 16 * nt, fP, acc);
    });
    const float chunk_decay = ea[L - 1];
    for_my_tiles<kP, kN>(tiles_of<L, kP>(), [&](int mt, int nt) {
      typename Op::Acc acc;
      Op::load(acc, hs + 16 * mt * fN + 16 * nt, fN);
      Op::scale(acc, chunk_decay);
      Op::template mma<false, true, L>(acc, xw, ldP, mt, Bs, ldN, nt);
      Op::store(hs + 16 * mt * fN + 16 * nt, fN, acc);
    });
    __syncthreads();

    // Phase 4: y out, and the operand copy of the new state. The next chunk's phase 1 reads them after its
    // first barrier.
    for (int i = tid; i < valid * kP; i += kThreads) {
      const int r = i / kP, q = i - r * kP;
      p.y[((row0 + r) * p.H + h) * kP + q] = from_f<S>(Ys[r * fP + q]);
    }
    if constexpr (Sm::kCopy) {
      for (int i = tid; i < kP * kN; i += kThreads) {
        const int r = i / kN, n = i - r * kN;
        hb[r * ldN + n] = from_f<S>(hs[r * fN + n]);
      }
    }
  }
  // h is final since the last phase-3 barrier, and phase 4 only reads it.
  for (int i = tid * 4; i < kP * kN; i += kThreads * 4) {
    const int r = i / kN, n = i - r * kN;
    *reinterpret_cast<float4*>(p.h_T + state_base + i) = *reinterpret_cast<const float4*>(hs + r * fN + n);
  }
}

template <typename S>
void launch_fwd(const FwdParams<S>& p, int64_t blocks) {
  constexpr size_t smem = FwdSmem<S>::bytes;
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  TORCH_CHECK(smem <= prop->sharedMemPerBlockOptin, "ssd_fwd: the kernel needs ", smem,
              " bytes of shared memory per block, this GPU allows ", prop->sharedMemPerBlockOptin,
              "; use --impl chunked");
  C10_CUDA_CHECK(cudaFuncSetAttribute(ssd_fwd_kernel<S>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem)));
  ssd_fwd_kernel<S><<<static_cast<unsigned>(blocks), kThreads, smem, at::cuda::getCurrentCUDAStream()>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

int64_t ssd_kernel_chunk(at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16,
              "ssd: the CUDA kernel takes float32 or bfloat16 x, B and C, got ", dtype,
              "; use --impl chunked or --impl reference");
  return dtype == at::kBFloat16 ? Cfg<bf16>::L : Cfg<float>::L;
}

std::vector<at::Tensor> ssd_fwd(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& Bm,
                                const at::Tensor& Cm, const at::Tensor& D, const at::Tensor& h0) {
  const int64_t L = ssd_kernel_chunk(x.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  TORCH_CHECK(x.dim() == 4 && x.size(3) == kP && Bm.dim() == 3 && Bm.size(2) == kN,
              "ssd_fwd: x must be [B,T,H,", kP, "] and B [B,T,", kN, "], got ", x.sizes(), " and ", Bm.sizes());
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), nc = (T + L - 1) / L;
  TORCH_CHECK(Bm.scalar_type() == x.scalar_type() && Cm.scalar_type() == x.scalar_type() &&
                  dt.scalar_type() == at::kFloat && A.scalar_type() == at::kFloat && D.scalar_type() == at::kFloat &&
                  (!h0.defined() || h0.scalar_type() == at::kFloat),
              "ssd_fwd: B and C must have x's dtype and dt, A, D, h0 float32");
  TORCH_CHECK(B * H < (int64_t(1) << 31) && B * T * H * kP < (int64_t(1) << 62) && T < (int64_t(1) << 30),
              "ssd_fwd: input too large ", x.sizes());
  for (const at::Tensor* t : {&x, &dt, &A, &Bm, &Cm, &D, &h0}) {
    if (!t->defined()) continue;
    ELMAN_CHECK_CUDA_TENSOR(*t);
    TORCH_CHECK(t->device() == x.device(), "ssd_fwd: every input must be on x's device");
  }
  TORCH_CHECK(reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 &&
                  reinterpret_cast<uintptr_t>(Bm.data_ptr()) % 16 == 0 &&
                  reinterpret_cast<uintptr_t>(Cm.data_ptr()) % 16 == 0 &&
                  (!h0.defined() || reinterpret_cast<uintptr_t>(h0.data_ptr()) % 16 == 0),
              "ssd_fwd: x, B, C and h0 must be 16-byte aligned");
  auto f32 = x.options().dtype(at::kFloat);
  auto y = ops::empty_output({B, T, H, kP}, x.options());
  auto h_T = ops::empty_output({B, H, kP, kN}, f32);
  auto states = ops::empty_output({B, H, nc, kP, kN}, f32);
  auto run = [&](auto tag) {
    using S = typename decltype(tag)::type;
    using Src = std::conditional_t<std::is_same<S, bf16>::value, at::BFloat16, float>;
    FwdParams<S> p{};
    p.x = reinterpret_cast<const S*>(x.data_ptr<Src>());
    p.Bm = reinterpret_cast<const S*>(Bm.data_ptr<Src>());
    p.Cm = reinterpret_cast<const S*>(Cm.data_ptr<Src>());
    p.y = reinterpret_cast<S*>(y.data_ptr<Src>());
    p.dt = dt.data_ptr<float>();
    p.A = A.data_ptr<float>();
    p.D = D.data_ptr<float>();
    p.h0 = h0.defined() ? h0.data_ptr<float>() : nullptr;
    p.h_T = h_T.data_ptr<float>();
    p.states = states.data_ptr<float>();
    p.T = static_cast<int>(T), p.H = static_cast<int>(H), p.nc = static_cast<int>(nc);
    launch_fwd(p, B * H);
  };
  if (x.scalar_type() == at::kBFloat16) run(Tag<bf16>{});
  else run(Tag<float>{});
  return {y, h_T, states};
}

}  // namespace elman::cuda
