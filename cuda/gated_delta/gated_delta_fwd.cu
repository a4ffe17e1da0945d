/* The gated delta rule, forward state pass: one launch walks all chunks.
 *
 * Grid: one block of kThreads per (batch b, head h, V tile of VT columns), b-major; the block keeps its tile of the
 * state S [K, VT] in fp32 shared memory for the whole launch. Per chunk c (gated_delta.h has the inputs):
 *   1. stage W, Qg, Kl [L,K], P [L,L] and the Ut tile [L,VT] in shared memory (operand type); store the entering
 *      state (fp32) to `states`;
 *   2. f0 = W S, f1 = Qg S;                        3. U = Ut - f0 (rounded to the operand type);
 *   4. f1 += P U (the output tile), S = decay S + Kl^T U (fp32 accumulators loaded from shared memory);
 *   5. write O from f1 (in the layout [B, nc L, H, V] that the layer reads, no permute); bf16: round S into its
 *      operand copy.
 * Numerics: the state and every sum are fp32; bf16 operands are multiplied on tensor cores with fp32 accumulation.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/gated_delta/gated_delta.cuh"
#include "cuda/gated_delta/gated_delta.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
using namespace gdn;

template <typename T>
struct FwdParams {
  const T *W, *Ut, *Qg, *Kl, *P;
  const float *decay, *h0;
  T* O;
  float* S_T;
  float* states;
  int B, nc, H, V;
};

// Shared-memory layout of the forward block (byte offsets).
template <typename T>
struct FwdSmem {
  using G = Geo<T>;
  static constexpr size_t Sf = 0;
  static constexpr size_t Sop = carve(Sf, sizeof(float) * kK * G::ldF);
  static constexpr size_t W = carve(Sop, G::kBf16 ? sizeof(T) * kK * G::ldV : 0);
  static constexpr size_t Qg = carve(W, sizeof(T) * kL * G::ldK);
  static constexpr size_t Kl = carve(Qg, sizeof(T) * kL * G::ldK);
  static constexpr size_t P = carve(Kl, sizeof(T) * kL * G::ldK);
  static constexpr size_t Ut = carve(P, sizeof(T) * kL * G::ldL);
  static constexpr size_t U = carve(Ut, sizeof(T) * kL * G::ldV);
  static constexpr size_t f0 = carve(U, sizeof(T) * kL * G::ldV);
  static constexpr size_t f1 = carve(f0, sizeof(float) * kL * G::ldF);
  static constexpr size_t bytes = carve(f1, sizeof(float) * kL * G::ldF);
};

template <typename T>
__global__ void __launch_bounds__(kThreads, 1) gated_delta_state_fwd_kernel(const FwdParams<T> p) {
  using G = Geo<T>;
  using Sm = FwdSmem<T>;
  constexpr int VT = G::VT, ldF = G::ldF, ldV = G::ldV, ldK = G::ldK, ldL = G::ldL;
  constexpr int ldS = G::kBf16 ? G::ldV : G::ldF;  // the operand copy of S (fp32: S itself)
  extern __shared__ __align__(128) unsigned char smem[];
  float* Sf = reinterpret_cast<float*>(smem + Sm::Sf);
  T* Sop = G::kBf16 ? reinterpret_cast<T*>(smem + Sm::Sop) : reinterpret_cast<T*>(Sf);
  T* Ws = reinterpret_cast<T*>(smem + Sm::W);
  T* Qs = reinterpret_cast<T*>(smem + Sm::Qg);
  T* Ks = reinterpret_cast<T*>(smem + Sm::Kl);
  T* Ps = reinterpret_cast<T*>(smem + Sm::P);
  T* Uts = reinterpret_cast<T*>(smem + Sm::Ut);
  T* Us = reinterpret_cast<T*>(smem + Sm::U);
  float* f0 = reinterpret_cast<float*>(smem + Sm::f0);
  float* f1 = reinterpret_cast<float*>(smem + Sm::f1);

  const int nvt = p.V / VT;
  const int vt = blockIdx.x % nvt, h = (blockIdx.x / nvt) % p.H, b = blockIdx.x / (nvt * p.H);
  const int64_t V = p.V, col0 = static_cast<int64_t>(vt) * VT;
  const int64_t sbase = (static_cast<int64_t>(b) * p.H + h) * kK * V + col0;  // h0, S_T [b,h,0,col0]

  for (int i = threadIdx.x; i < kK * VT; i += kThreads) {
    const int r = i / VT, c = i - r * VT;
    Sf[r * ldF + c] = p.h0[sbase + r * V + c];
    if constexpr (G::kBf16) Sop[r * ldS + c] = from_f<T>(Sf[r * ldF + c]);
  }
  __syncthreads();

  for (int c = 0; c < p.nc; ++c) {
    const int64_t bch = (static_cast<int64_t>(b) * p.nc + c) * p.H + h;
    copy_tile(Ws, ldK, p.W + bch * kL * kK, kK, kL, kK);
    copy_tile(Qs, ldK, p.Qg + bch * kL * kK, kK, kL, kK);
    copy_tile(Ks, ldK, p.Kl + bch * kL * kK, kK, kL, kK);
    copy_tile(Ps, ldL, p.P + bch * kL * kL, kL, kL, kL);
    copy_tile(Uts, ldV, p.Ut + bch * kL * V + col0, V, kL, VT);
    float* st = p.states + ((static_cast<int64_t>(b) * p.H + h) * p.nc + c) * kK * V + col0;
    for (int i = threadIdx.x; i < kK * VT; i += kThreads) {
      const int r = i / VT, cc = i - r * VT;
      st[r * V + cc] = Sf[r * ldF + cc];
    }
    __syncthreads();
    mm<T, kL, VT>(f0, ldF, false, 0.f, term<T>(Ws, ldK, false, Sop, ldS, false, kK));
    mm<T, kL, VT>(f1, ldF, false, 0.f, term<T>(Qs, ldK, false, Sop, ldS, false, kK));
    __syncthreads();
    for (int i = threadIdx.x; i < kL * VT; i += kThreads) {
      const int r = i / VT, cc = i - r * VT;
      Us[r * ldV + cc] = from_f<T>(to_f(Uts[r * ldV + cc]) - f0[r * ldF + cc]);
    }
    __syncthreads();
    // fp32: Sop is Sf, which only the products above read; the state update below writes it.
    mm<T, kL, VT>(f1, ldF, true, 1.f, term<T>(Ps, ldL, false, Us, ldV, false, kL));
    mm<T, kK, VT>(Sf, ldF, true, p.decay[bch], term<T>(Ks, ldK, true, Us, ldV, false, kL));
    __syncthreads();
    T* o = p.O + ((static_cast<int64_t>(b) * p.nc + c) * kL * p.H + h) * V + col0;  // [B, nc L, H, V]
    for (int i = threadIdx.x; i < kL * VT; i += kThreads) {
      const int r = i / VT, cc = i - r * VT;
      o[r * p.H * V + cc] = from_f<T>(f1[r * ldF + cc]);
    }
    if constexpr (G::kBf16) to_op(Sop, ldS, Sf, ldF, kK, VT);
    __syncthreads();
  }
  for (int i = threadIdx.x; i < kK * VT; i += kThreads) {
    const int r = i / VT, c = i - r * VT;
    p.S_T[sbase + r * V + c] = Sf[r * ldF + c];
  }
}

}  // namespace

std::vector<at::Tensor> gated_delta_state_fwd(const at::Tensor& W, const at::Tensor& Ut, const at::Tensor& Qg,
                                              const at::Tensor& Kl, const at::Tensor& P, const at::Tensor& decay,
                                              const at::Tensor& h0) {
  const c10::cuda::CUDAGuard guard(W.device());
  const int64_t B = W.size(0), nc = W.size(1), H = W.size(2), V = Ut.size(4);
  for (const auto* t : {&W, &Ut, &Qg, &Kl, &P}) {
    ELMAN_CHECK_CUDA_TENSOR(*t);
    TORCH_CHECK(t->scalar_type() == W.scalar_type(), "gated_delta_state_fwd: operands must share one dtype");
  }
  ELMAN_CHECK_CUDA_TENSOR(decay);
  ELMAN_CHECK_CUDA_TENSOR(h0);
  TORCH_CHECK(W.sizes() == at::IntArrayRef({B, nc, H, kL, kK}) && Qg.sizes() == W.sizes() && Kl.sizes() == W.sizes() &&
                  P.sizes() == at::IntArrayRef({B, nc, H, kL, kL}) && Ut.sizes() == at::IntArrayRef({B, nc, H, kL, V}) &&
                  decay.sizes() == at::IntArrayRef({B, nc, H}) && h0.sizes() == at::IntArrayRef({B, H, kK, V}),
              "gated_delta_state_fwd: inconsistent shapes");
  TORCH_CHECK(decay.scalar_type() == at::kFloat && h0.scalar_type() == at::kFloat,
              "gated_delta_state_fwd: decay and h0 must be float32");
  const bool bf16 = W.scalar_type() == at::kBFloat16;
  TORCH_CHECK(bf16 || W.scalar_type() == at::kFloat, "gated_delta_state_fwd: operands must be float32 or bfloat16");
  TORCH_CHECK(V % 64 == 0, "gated_delta_state_fwd: V must be a multiple of 64, got ", V);
  TORCH_CHECK(B * H * (V / 32) < (int64_t(1) << 31), "gated_delta_state_fwd: too many blocks");
  auto O = ops::empty_output({B, nc * kL, H, V}, W.options());
  auto S_T = ops::empty_output({B, H, kK, V}, h0.options());
  auto states = ops::empty_output({B, H, nc, kK, V}, W.options().dtype(at::kFloat));
  auto run = [&](auto tag) {
    using T = decltype(tag);
    FwdParams<T> p{};
    p.W = reinterpret_cast<const T*>(W.data_ptr());
    p.Ut = reinterpret_cast<const T*>(Ut.data_ptr());
    p.Qg = reinterpret_cast<const T*>(Qg.data_ptr());
    p.Kl = reinterpret_cast<const T*>(Kl.data_ptr());
    p.P = reinterpret_cast<const T*>(P.data_ptr());
    p.decay = decay.data_ptr<float>();
    p.h0 = h0.data_ptr<float>();
    p.O = reinterpret_cast<T*>(O.data_ptr());
    p.S_T = S_T.data_ptr<float>();
    p.states = states.data_ptr<float>();
    p.B = int(B), p.nc = int(nc), p.H = int(H), p.V = int(V);
    launch_state_pass<T>(gated_delta_state_fwd_kernel<T>, FwdSmem<T>::bytes, p);
  };
  if (bf16) run(__nv_bfloat16{});
  else run(float{});
  return {O, S_T, states};
}

}  // namespace elman::cuda
