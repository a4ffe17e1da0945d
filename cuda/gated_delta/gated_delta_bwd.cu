/* The gated delta rule, backward state pass: one launch walks the chunks in reverse.
 *
 * Grid as the forward: one block per (b, h, V tile); the block keeps dS [K, VT] (the gradient of the state
 * leaving the current chunk, starting from dS_T) in fp32 shared memory. With the forward's per-chunk math
 * U = Ut - W S, O = Qg S + P U, S' = decay S + Kl^T U and dS' the incoming gradient of S', per chunk c in reverse:
 *   ddecay = sum(S o dS')                          (block sum, fixed order)
 *   dU     = P^T dO + Kl dS'                       = dUt
 *   dW     = -dU S^T,  dQg = dO S^T,  dKl = U dS'^T,  dP = dO U^T     (this tile's share of the sums over V)
 *   dS     = decay dS' + Qg^T dO - W^T dU          (the gradient of the state entering chunk c)
 * and dh0 is the last dS. U is recomputed from the saved entering state exactly as the forward computed it.
 * The shares of dW, dQg, dKl and dP are added into their outputs with atomics (mm_add; bf16 through per-warp
 * scratch in f0, free by then), so their last bits vary from run to run; ddecay's shares go to a small per-V-tile
 * buffer that the host sums.
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
struct BwdParams {
  const T *W, *Ut, *Qg, *Kl, *P, *dO;
  const float* states;  // fp32: the decay's gradient sum(S o dS') cancels, bf16 states lost ~40% of it
  const float *decay, *dS_T;
  float *dUt, *dh0, *dW, *dQg, *dKl, *dP;  // dW .. dP zeroed by the host, every V tile adds its share
  float* ddecp;                            // [nvt, ...] shares
  int B, nc, H, V;
};

template <typename T>
struct BwdSmem {
  using G = Geo<T>;
  static constexpr size_t dSf = 0;
  static constexpr size_t dSop = carve(dSf, sizeof(float) * kK * G::ldF);
  static constexpr size_t W = carve(dSop, G::kBf16 ? sizeof(T) * kK * G::ldV : 0);
  static constexpr size_t Qg = carve(W, sizeof(T) * kL * G::ldK);
  static constexpr size_t Kl = carve(Qg, sizeof(T) * kL * G::ldK);
  static constexpr size_t P = carve(Kl, sizeof(T) * kL * G::ldK);
  static constexpr size_t Ut = carve(P, sizeof(T) * kL * G::ldL);
  static constexpr size_t dO = carve(Ut, sizeof(T) * kL * G::ldV);
  static constexpr size_t S = carve(dO, sizeof(T) * kL * G::ldV);
  static constexpr size_t U = carve(S, sizeof(T) * kK * G::ldV);
  static constexpr size_t dUn = carve(U, sizeof(T) * kL * G::ldV);
  static constexpr size_t f0 = carve(dUn, sizeof(T) * kL * G::ldV);
  static constexpr size_t f1 = carve(f0, sizeof(float) * kL * G::ldF);
  static constexpr size_t red = carve(f1, sizeof(float) * kL * G::ldF);
  static constexpr size_t bytes = carve(red, sizeof(float) * kWarps);
};

template <typename T>
__global__ void __launch_bounds__(kThreads, 1) gated_delta_state_bwd_kernel(const BwdParams<T> p) {
  using G = Geo<T>;
  using Sm = BwdSmem<T>;
  constexpr int VT = G::VT, ldF = G::ldF, ldV = G::ldV, ldK = G::ldK, ldL = G::ldL;
  constexpr int ldS = G::kBf16 ? G::ldV : G::ldF;  // the operand copy of dS (fp32: dS itself)
  extern __shared__ __align__(128) unsigned char smem[];
  float* dSf = reinterpret_cast<float*>(smem + Sm::dSf);
  T* dSop = G::kBf16 ? reinterpret_cast<T*>(smem + Sm::dSop) : reinterpret_cast<T*>(dSf);
  T* Ws = reinterpret_cast<T*>(smem + Sm::W);
  T* Qs = reinterpret_cast<T*>(smem + Sm::Qg);
  T* Ks = reinterpret_cast<T*>(smem + Sm::Kl);
  T* Ps = reinterpret_cast<T*>(smem + Sm::P);
  T* Uts = reinterpret_cast<T*>(smem + Sm::Ut);
  T* dOs = reinterpret_cast<T*>(smem + Sm::dO);
  T* Ss = reinterpret_cast<T*>(smem + Sm::S);  // [K][ldV] the saved entering state
  T* Us = reinterpret_cast<T*>(smem + Sm::U);
  T* dUn = reinterpret_cast<T*>(smem + Sm::dUn);
  float* f0 = reinterpret_cast<float*>(smem + Sm::f0);
  float* f1 = reinterpret_cast<float*>(smem + Sm::f1);
  float* red = reinterpret_cast<float*>(smem + Sm::red);

  const int nvt = p.V / VT;
  const int vt = blockIdx.x % nvt, h = (blockIdx.x / nvt) % p.H, b = blockIdx.x / (nvt * p.H);
  const int64_t V = p.V, col0 = static_cast<int64_t>(vt) * VT;
  const int64_t sbase = (static_cast<int64_t>(b) * p.H + h) * kK * V + col0;
  const int64_t share = static_cast<int64_t>(p.B) * p.nc * p.H;  // (b, c, h) entries per V-tile share

  for (int i = threadIdx.x; i < kK * VT; i += kThreads) {
    const int r = i / VT, c = i - r * VT;
    dSf[r * ldF + c] = p.dS_T[sbase + r * V + c];
    if constexpr (G::kBf16) dSop[r * ldS + c] = from_f<T>(dSf[r * ldF + c]);
  }
  __syncthreads();

  for (int c = p.nc - 1; c >= 0; --c) {
    const int64_t bch = (static_cast<int64_t>(b) * p.nc + c) * p.H + h;
    copy_tile(Ws, ldK, p.W + bch * kL * kK, kK, kL, kK);
    copy_tile(Qs, ldK, p.Qg + bch * kL * kK, kK, kL, kK);
    copy_tile(Ks, ldK, p.Kl + bch * kL * kK, kK, kL, kK);
    copy_tile(Ps, ldL, p.P + bch * kL * kL, kL, kL, kL);
    copy_tile(Uts, ldV, p.Ut + bch * kL * V + col0, V, kL, VT);
    copy_tile(dOs, ldV, p.dO + ((static_cast<int64_t>(b) * p.nc + c) * kL * p.H + h) * V + col0, p.H * V, kL, VT);
    // The entering state (fp32) as the products' operand, and ddecay = sum(S o dS') over this tile in fp32.
    const float* st = p.states + ((static_cast<int64_t>(b) * p.H + h) * p.nc + c) * kK * V + col0;
    float part = 0.f;
    for (int i = threadIdx.x; i < kK * VT; i += kThreads) {
      const int r = i / VT, cc = i - r * VT;
      const float s = __ldg(st + r * V + cc);
      Ss[r * ldV + cc] = from_f<T>(s);
      part += s * dSf[r * ldF + cc];
    }
    __syncthreads();
    const float dd = block_sum(part, red);
    if (threadIdx.x == 0) p.ddecp[vt * share + bch] = dd;
    mm<T, kL, VT>(f0, ldF, false, 0.f, term<T>(Ws, ldK, false, Ss, ldV, false, kK));   // W S
    mm<T, kL, VT>(f1, ldF, false, 0.f, term<T>(Ks, ldK, false, dSop, ldS, false, kK));  // Kl dS'
    __syncthreads();
    for (int i = threadIdx.x; i < kL * VT; i += kThreads) {
      const int r = i / VT, cc = i - r * VT;
      Us[r * ldV + cc] = from_f<T>(to_f(Uts[r * ldV + cc]) - f0[r * ldF + cc]);
    }
    mm<T, kL, VT>(f1, ldF, true, 1.f, term<T>(Ps, ldL, true, dOs, ldV, false, kL));  // += P^T dO: dU
    __syncthreads();
    float* dut = p.dUt + bch * kL * V + col0;
    for (int i = threadIdx.x; i < kL * VT; i += kThreads) {
      const int r = i / VT, cc = i - r * VT;
      const float x = f1[r * ldF + cc];
      dut[r * V + cc] = x;
      dUn[r * ldV + cc] = from_f<T>(-x);
    }
    __syncthreads();
    // This tile's shares of the sums over V, added into global memory (dW = -dU S^T from dUn = -dU).
    static_assert(!G::kBf16 || kWarps * 256 <= kL * ldF, "the atomic scratch does not fit in f0");
    mm_add<T, kL, kK>(p.dW + bch * kL * kK, kK, f0, term<T>(dUn, ldV, false, Ss, ldV, true, VT));
    mm_add<T, kL, kK>(p.dQg + bch * kL * kK, kK, f0, term<T>(dOs, ldV, false, Ss, ldV, true, VT));
    mm_add<T, kL, kK>(p.dKl + bch * kL * kK, kK, f0, term<T>(Us, ldV, false, dSop, ldS, true, VT));
    mm_add<T, kL, kL>(p.dP + bch * kL * kL, kL, f0, term<T>(dOs, ldV, false, Us, ldV, true, VT));
    __syncthreads();  // fp32: dSop is dSf, read above and rewritten below
    mm<T, kK, VT>(dSf, ldF, true, p.decay[bch], term<T>(Qs, ldK, true, dOs, ldV, false, kL),
                  term<T>(Ws, ldK, true, dUn, ldV, false, kL));
    __syncthreads();
    if constexpr (G::kBf16) {
      to_op(dSop, ldS, dSf, ldF, kK, VT);
      __syncthreads();
    }
  }
  for (int i = threadIdx.x; i < kK * VT; i += kThreads) {
    const int r = i / VT, c = i - r * VT;
    p.dh0[sbase + r * V + c] = dSf[r * ldF + c];
  }
}

}  // namespace

std::vector<at::Tensor> gated_delta_state_bwd(const at::Tensor& W, const at::Tensor& Ut, const at::Tensor& Qg,
                                              const at::Tensor& Kl, const at::Tensor& P, const at::Tensor& decay,
                                              const at::Tensor& states, const at::Tensor& dO, const at::Tensor& dS_T) {
  const c10::cuda::CUDAGuard guard(W.device());
  const int64_t B = W.size(0), nc = W.size(1), H = W.size(2), V = Ut.size(4);
  for (const auto* t : {&W, &Ut, &Qg, &Kl, &P, &dO}) {
    ELMAN_CHECK_CUDA_TENSOR(*t);
    TORCH_CHECK(t->scalar_type() == W.scalar_type(), "gated_delta_state_bwd: operands must share one dtype");
  }
  ELMAN_CHECK_CUDA_TENSOR(decay);
  ELMAN_CHECK_CUDA_TENSOR(states);
  TORCH_CHECK(states.scalar_type() == at::kFloat, "gated_delta_state_bwd: states must be float32");
  ELMAN_CHECK_CUDA_TENSOR(dS_T);
  TORCH_CHECK(states.sizes() == at::IntArrayRef({B, H, nc, kK, V}) && dO.sizes() == at::IntArrayRef({B, nc * kL, H, V}) &&
                  dS_T.sizes() == at::IntArrayRef({B, H, kK, V}) && dS_T.scalar_type() == at::kFloat,
              "gated_delta_state_bwd: inconsistent shapes");
  const bool bf16 = W.scalar_type() == at::kBFloat16;
  const int64_t nvt = V / (bf16 ? Geo<__nv_bfloat16>::VT : Geo<float>::VT);
  auto f32 = W.options().dtype(at::kFloat);
  auto dUt = ops::empty_output({B, nc, H, kL, V}, f32);
  auto dh0 = ops::empty_output({B, H, kK, V}, f32);
  auto dW = at::zeros({B, nc, H, kL, kK}, f32);  // the V tiles add their shares (atomics)
  auto dQg = at::zeros({B, nc, H, kL, kK}, f32);
  auto dKl = at::zeros({B, nc, H, kL, kK}, f32);
  auto dP = at::zeros({B, nc, H, kL, kL}, f32);
  auto ddecp = ops::empty_output({nvt, B, nc, H}, f32);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    BwdParams<T> p{};
    p.W = reinterpret_cast<const T*>(W.data_ptr());
    p.Ut = reinterpret_cast<const T*>(Ut.data_ptr());
    p.Qg = reinterpret_cast<const T*>(Qg.data_ptr());
    p.Kl = reinterpret_cast<const T*>(Kl.data_ptr());
    p.P = reinterpret_cast<const T*>(P.data_ptr());
    p.states = states.data_ptr<float>();
    p.dO = reinterpret_cast<const T*>(dO.data_ptr());
    p.decay = decay.data_ptr<float>();
    p.dS_T = dS_T.data_ptr<float>();
    p.dUt = dUt.data_ptr<float>();
    p.dh0 = dh0.data_ptr<float>();
    p.dW = dW.data_ptr<float>();
    p.dQg = dQg.data_ptr<float>();
    p.dKl = dKl.data_ptr<float>();
    p.dP = dP.data_ptr<float>();
    p.ddecp = ddecp.data_ptr<float>();
    p.B = int(B), p.nc = int(nc), p.H = int(H), p.V = int(V);
    launch_state_pass<T>(gated_delta_state_bwd_kernel<T>, BwdSmem<T>::bytes, p);
  };
  if (bf16) run(__nv_bfloat16{});
  else run(float{});
  return {dW, dUt, dQg, dKl, dP, ddecp.sum(0), dh0};
}

}  // namespace elman::cuda
