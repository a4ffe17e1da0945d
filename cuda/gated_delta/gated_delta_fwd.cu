/* The gated delta rule, forward: the state pass over the chunks, then the outputs of all chunks at once.
 *
 * 1. gated_delta_state_fwd_kernel, one block of kThreads per (batch b, head h, V tile of VT columns), b-major; the
 *    block keeps its tile of the state S [K, VT] in fp32 shared memory for the whole launch. Per chunk c
 *    (gated_delta.h has the inputs): store the entering state to `states` (fp32) and, for bf16, its operand copy
 *    to `states_op`; U = Ut - W S (rounded to the
 *    operand type, written to U for the output kernel and the backward); S <- decay S + Kl^T U. W, Kl and the Ut
 *    tile do not depend on S: they are copied by cp.async one chunk ahead (kStages buffers), so the loads of
 *    chunk c + 1 run under the products of chunk c.
 * 2. gated_delta_out_fwd_kernel, one block per (b, c, h, V tile), independent of each other: O = Qg S + P U from
 *    the saved entering state (its operand copy, which the state pass also writes for bf16) and U, written in the
 *    layout [B, nc L, H, V] that the layer reads (no permute). Until 2026-11-24 the state pass formed O itself,
 *    which put the Qg and P loads and two more products on its sequential path.
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
  const T *W, *Ut, *Kl;
  const float *decay, *h0;
  T* U;
  float* S_T;
  float* states;
  T* states_op;  // bf16: the states rounded (what the products read); fp32: states itself
  int B, nc, H, V;
};

// Shared-memory layout of the state pass (byte offsets); W, Kl and Ut have kStages buffers each.
template <typename T>
struct FwdSmem {
  using G = Geo<T>;
  static constexpr int kStages = 2;
  static constexpr size_t kW = sizeof(T) * kL * G::ldK, kUt = sizeof(T) * kL * G::ldV;  // one buffer
  static constexpr size_t Sf = 0;
  static constexpr size_t Sop = carve(Sf, sizeof(float) * kK * G::ldF);
  static constexpr size_t W = carve(Sop, G::kBf16 ? sizeof(T) * kK * G::ldV : 0);
  static constexpr size_t Kl = carve(W, kStages * kW);
  static constexpr size_t Ut = carve(Kl, kStages * kW);
  static constexpr size_t U = carve(Ut, kStages * kUt);
  static constexpr size_t f0 = carve(U, sizeof(T) * kL * G::ldV);
  static constexpr size_t bytes = carve(f0, sizeof(float) * kL * G::ldF);
};

template <typename T>
__global__ void __launch_bounds__(kThreads, 1) gated_delta_state_fwd_kernel(const FwdParams<T> p) {
  using G = Geo<T>;
  using Sm = FwdSmem<T>;
  constexpr int VT = G::VT, ldF = G::ldF, ldV = G::ldV, ldK = G::ldK, E = 16 / sizeof(T);
  constexpr int ldS = G::kBf16 ? G::ldV : G::ldF;  // the operand copy of S (fp32: S itself)
  extern __shared__ __align__(128) unsigned char smem[];
  float* Sf = reinterpret_cast<float*>(smem + Sm::Sf);
  T* Sop = G::kBf16 ? reinterpret_cast<T*>(smem + Sm::Sop) : reinterpret_cast<T*>(Sf);
  T* Us = reinterpret_cast<T*>(smem + Sm::U);
  float* f0 = reinterpret_cast<float*>(smem + Sm::f0);
  auto Ws = [&](int c) { return reinterpret_cast<T*>(smem + Sm::W + (c % Sm::kStages) * Sm::kW); };
  auto Ks = [&](int c) { return reinterpret_cast<T*>(smem + Sm::Kl + (c % Sm::kStages) * Sm::kW); };
  auto Uts = [&](int c) { return reinterpret_cast<T*>(smem + Sm::Ut + (c % Sm::kStages) * Sm::kUt); };

  const int nvt = p.V / VT;
  const int vt = blockIdx.x % nvt, h = (blockIdx.x / nvt) % p.H, b = blockIdx.x / (nvt * p.H);
  const int64_t V = p.V, col0 = static_cast<int64_t>(vt) * VT;
  const int64_t sbase = (static_cast<int64_t>(b) * p.H + h) * kK * V + col0;  // h0, S_T [b,h,0,col0]
  auto bch = [&](int c) { return (static_cast<int64_t>(b) * p.nc + c) * p.H + h; };
  auto issue = [&](int c) {  // chunk c's W, Kl and Ut tile into their buffers
    copy_tile_async(Ws(c), ldK, p.W + bch(c) * kL * kK, kK, kL, kK);
    copy_tile_async(Ks(c), ldK, p.Kl + bch(c) * kL * kK, kK, kL, kK);
    copy_tile_async(Uts(c), ldV, p.Ut + bch(c) * kL * V + col0, V, kL, VT);
    cp_async_commit();
  };

  issue(0);
  for (int i = threadIdx.x; i < kK * VT; i += kThreads) {  // h0 is the caller's: any alignment
    const int r = i / VT, c = i - r * VT;
    Sf[r * ldF + c] = p.h0[sbase + r * V + c];
    if constexpr (G::kBf16) Sop[r * ldS + c] = from_f<T>(Sf[r * ldF + c]);
  }

  for (int c = 0; c < p.nc; ++c) {
    if (c + 1 < p.nc) {  // the buffers of chunk c + 1 were last read by chunk c - 1, before its final barrier
      issue(c + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int64_t st = ((static_cast<int64_t>(b) * p.H + h) * p.nc + c) * kK * V + col0;
    store_tile(p.states + st, V, Sf, ldF, kK, VT);
    if constexpr (G::kBf16) store_tile(p.states_op + st, V, Sop, ldS, kK, VT);
    mm<T, kL, VT>(f0, ldF, false, 0.f, term<T>(Ws(c), ldK, false, Sop, ldS, false, kK));
    __syncthreads();
    const T* ut = Uts(c);
    T* ug = p.U + bch(c) * kL * V + col0;
    for (int i = threadIdx.x; i < kL * VT / E; i += kThreads) {  // U = Ut - W S, E values a thread
      const int r = i / (VT / E), cc = (i - r * (VT / E)) * E;
      __align__(16) T u[E];
#pragma unroll
      for (int j = 0; j < E; ++j) u[j] = from_f<T>(to_f(ut[r * ldV + cc + j]) - f0[r * ldF + cc + j]);
      *reinterpret_cast<uint4*>(Us + r * ldV + cc) = *reinterpret_cast<const uint4*>(u);
      *reinterpret_cast<uint4*>(ug + r * V + cc) = *reinterpret_cast<const uint4*>(u);
    }
    __syncthreads();
    // fp32: Sop is Sf, which only the product above read; the state update below writes it.
    mm<T, kK, VT>(Sf, ldF, true, p.decay[bch(c)], term<T>(Ks(c), ldK, true, Us, ldV, false, kL));
    __syncthreads();
    if constexpr (G::kBf16) {
      to_op(Sop, ldS, Sf, ldF, kK, VT);
      __syncthreads();
    }
  }
  store_tile(p.S_T + sbase, V, Sf, ldF, kK, VT);
}

template <typename T>
struct OutParams {
  const T *Qg, *P, *U, *states;  // states: the operand copy
  T* O;
  int B, nc, H, V;
};

template <typename T>
struct OutSmem {
  using G = Geo<T>;
  static constexpr size_t Qg = 0;
  static constexpr size_t P = carve(Qg, sizeof(T) * kL * G::ldK);
  static constexpr size_t U = carve(P, sizeof(T) * kL * G::ldL);
  static constexpr size_t S = carve(U, sizeof(T) * kL * G::ldV);
  static constexpr size_t scratch = carve(S, sizeof(T) * kK * G::ldV);  // mm_out's bf16 rounding
  static constexpr size_t bytes = carve(scratch, G::kBf16 ? sizeof(float) * 256 * kWarps : 0);
};

template <typename T>
__global__ void __launch_bounds__(kThreads, 2) gated_delta_out_fwd_kernel(const OutParams<T> p) {
  using G = Geo<T>;
  using Sm = OutSmem<T>;
  constexpr int VT = G::VT, ldV = G::ldV, ldK = G::ldK, ldL = G::ldL;
  extern __shared__ __align__(128) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem + Sm::Qg);
  T* Ps = reinterpret_cast<T*>(smem + Sm::P);
  T* Us = reinterpret_cast<T*>(smem + Sm::U);
  T* Ss = reinterpret_cast<T*>(smem + Sm::S);
  float* scratch = reinterpret_cast<float*>(smem + Sm::scratch);

  const int nvt = p.V / VT;
  const int vt = blockIdx.x % nvt, h = (blockIdx.x / nvt) % p.H;
  const int c = (blockIdx.x / (nvt * p.H)) % p.nc, b = blockIdx.x / (nvt * p.H * p.nc);
  const int64_t V = p.V, col0 = static_cast<int64_t>(vt) * VT;
  const int64_t bch = (static_cast<int64_t>(b) * p.nc + c) * p.H + h;
  copy_tile(Qs, ldK, p.Qg + bch * kL * kK, kK, kL, kK);
  copy_tile(Ps, ldL, p.P + bch * kL * kL, kL, kL, kL);
  copy_tile(Us, ldV, p.U + bch * kL * V + col0, V, kL, VT);
  copy_tile(Ss, ldV, p.states + ((static_cast<int64_t>(b) * p.H + h) * p.nc + c) * kK * V + col0, V, kK, VT);
  __syncthreads();
  T* o = p.O + ((static_cast<int64_t>(b) * p.nc + c) * kL * p.H + h) * V + col0;  // [B, nc L, H, V]
  mm_out<T, kL, VT>(o, p.H * p.V, scratch, term<T>(Qs, ldK, false, Ss, ldV, false, kK),
                    term<T>(Ps, ldL, false, Us, ldV, false, kL));
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
  auto O = ops::empty_output({B, nc * kL, H, V}, W.options());
  auto S_T = ops::empty_output({B, H, kK, V}, h0.options());
  auto states = ops::empty_output({B, H, nc, kK, V}, W.options().dtype(at::kFloat));
  auto U = ops::empty_output({B, nc, H, kL, V}, W.options());
  auto states_op = bf16 ? ops::empty_output({B, H, nc, kK, V}, W.options()) : states;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const int64_t nvt = V / Geo<T>::VT;
    FwdParams<T> p{};
    p.W = reinterpret_cast<const T*>(W.data_ptr());
    p.Ut = reinterpret_cast<const T*>(Ut.data_ptr());
    p.Kl = reinterpret_cast<const T*>(Kl.data_ptr());
    p.decay = decay.data_ptr<float>();
    p.h0 = h0.data_ptr<float>();
    p.U = reinterpret_cast<T*>(U.data_ptr());
    p.S_T = S_T.data_ptr<float>();
    p.states = states.data_ptr<float>();
    p.states_op = reinterpret_cast<T*>(states_op.data_ptr());
    p.B = int(B), p.nc = int(nc), p.H = int(H), p.V = int(V);
    launch(gated_delta_state_fwd_kernel<T>, B * H * nvt, FwdSmem<T>::bytes, p);
    OutParams<T> q{};
    q.Qg = reinterpret_cast<const T*>(Qg.data_ptr());
    q.P = reinterpret_cast<const T*>(P.data_ptr());
    q.U = p.U;
    q.states = p.states_op;
    q.O = reinterpret_cast<T*>(O.data_ptr());
    q.B = p.B, q.nc = p.nc, q.H = p.H, q.V = p.V;
    launch(gated_delta_out_fwd_kernel<T>, B * nc * H * nvt, OutSmem<T>::bytes, q);
  };
  if (bf16) run(__nv_bfloat16{});
  else run(float{});
  return {O, S_T, states, U, states_op};
}

}  // namespace elman::cuda
