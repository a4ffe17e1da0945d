/* The gated delta rule, backward: the state pass in reverse, then every chunk's shares at once.
 *
 * With the forward's per-chunk math U = Ut - W S, O = Qg S + P U, S' = decay S + Kl^T U and dS' the incoming
 * gradient of S':
 *   dU     = P^T dO + Kl dS'                       = dUt
 *   dS     = decay dS' + Qg^T dO - W^T dU          (the gradient of the state entering chunk c)
 *   dW     = -dU S^T,  dQg = dO S^T,  dKl = U dS'^T,  dP = dO U^T,  ddecay = sum(S o dS')
 * Only the first two lines are sequential in c.
 * 1. gated_delta_state_bwd_kernel, one block per (b, h, V tile) as the forward's state pass, keeps dS [K, VT] in
 *    fp32 shared memory from dS_T and walks the chunks in reverse: stores dS' (fp32, `dstates`), writes dU (fp32,
 *    dUt) and updates dS; dh0 is the last dS. W, Qg, Kl, P and the dO tile do not depend on dS: for bf16 they are
 *    copied by cp.async one chunk ahead (two buffers; fp32 operands take twice the bytes and have one).
 * 2. gated_delta_share_bwd_kernel, two blocks per (b, c, h), independent of each other, each walking the V tiles
 *    with its sums over V in fp32 shared memory: role 0 forms dW and dQg from S (the forward's operand copy), dU and
 *    dO; role 1 forms dKl, dP and ddecay from U, S (fp32), dS' and dO. Every output element is written once by one block: no atomics, no zeroed
 *    buffers, deterministic. Until 2026-11-24 the state pass added each V tile's shares into zeroed outputs with
 *    atomics, which put four more products on its sequential path and ~1.5 ms of zero fills into a 100M step.
 * The saved states are fp32 (the decay's gradient sum(S o dS') cancels: bf16 states lost ~40% of it), rounded to
 * the operand type for the products as the forward's were; U is the forward's (already in the operand type).
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
  const T *W, *Qg, *Kl, *P, *dO;
  const float *decay, *dS_T;
  float *dUt, *dstates, *dh0;
  int B, nc, H, V;
};

// Shared-memory layout of the reverse state pass; W, Qg, Kl, P and dO have kStages buffers each.
template <typename T>
struct BwdSmem {
  using G = Geo<T>;
  static constexpr int kStages = G::kBf16 ? 2 : 1;
  static constexpr size_t kLK = sizeof(T) * kL * G::ldK, kLL = sizeof(T) * kL * G::ldL, kLV = sizeof(T) * kL * G::ldV;
  static constexpr size_t dSf = 0;
  static constexpr size_t dSop = carve(dSf, sizeof(float) * kK * G::ldF);
  static constexpr size_t W = carve(dSop, G::kBf16 ? sizeof(T) * kK * G::ldV : 0);
  static constexpr size_t Qg = carve(W, kStages * kLK);
  static constexpr size_t Kl = carve(Qg, kStages * kLK);
  static constexpr size_t P = carve(Kl, kStages * kLK);
  static constexpr size_t dO = carve(P, kStages * kLL);
  static constexpr size_t dUn = carve(dO, kStages * kLV);
  static constexpr size_t f1 = carve(dUn, kLV);
  static constexpr size_t bytes = carve(f1, sizeof(float) * kL * G::ldF);
};

template <typename T>
__global__ void __launch_bounds__(kThreads, 1) gated_delta_state_bwd_kernel(const BwdParams<T> p) {
  using G = Geo<T>;
  using Sm = BwdSmem<T>;
  constexpr int VT = G::VT, ldF = G::ldF, ldV = G::ldV, ldK = G::ldK, ldL = G::ldL, S = Sm::kStages;
  constexpr int ldS = G::kBf16 ? G::ldV : G::ldF;  // the operand copy of dS (fp32: dS itself)
  extern __shared__ __align__(128) unsigned char smem[];
  float* dSf = reinterpret_cast<float*>(smem + Sm::dSf);
  T* dSop = G::kBf16 ? reinterpret_cast<T*>(smem + Sm::dSop) : reinterpret_cast<T*>(dSf);
  T* dUn = reinterpret_cast<T*>(smem + Sm::dUn);
  float* f1 = reinterpret_cast<float*>(smem + Sm::f1);
  auto buf = [&](size_t off, size_t bytes, int c) { return reinterpret_cast<T*>(smem + off + (c % S) * bytes); };

  const int nvt = p.V / VT;
  const int vt = blockIdx.x % nvt, h = (blockIdx.x / nvt) % p.H, b = blockIdx.x / (nvt * p.H);
  const int64_t V = p.V, col0 = static_cast<int64_t>(vt) * VT;
  const int64_t sbase = (static_cast<int64_t>(b) * p.H + h) * kK * V + col0;
  auto bch = [&](int c) { return (static_cast<int64_t>(b) * p.nc + c) * p.H + h; };
  auto issue = [&](int c) {  // chunk c's W, Qg, Kl, P and dO tile into their buffers
    copy_tile_async(buf(Sm::W, Sm::kLK, c), ldK, p.W + bch(c) * kL * kK, kK, kL, kK);
    copy_tile_async(buf(Sm::Qg, Sm::kLK, c), ldK, p.Qg + bch(c) * kL * kK, kK, kL, kK);
    copy_tile_async(buf(Sm::Kl, Sm::kLK, c), ldK, p.Kl + bch(c) * kL * kK, kK, kL, kK);
    copy_tile_async(buf(Sm::P, Sm::kLL, c), ldL, p.P + bch(c) * kL * kL, kL, kL, kL);
    copy_tile_async(buf(Sm::dO, Sm::kLV, c), ldV, p.dO + ((static_cast<int64_t>(b) * p.nc + c) * kL * p.H + h) * V + col0,
                    p.H * V, kL, VT);
    cp_async_commit();
  };

  if (S == 2) issue(p.nc - 1);
  for (int i = threadIdx.x; i < kK * VT; i += kThreads) {  // dS_T is the caller's: any alignment
    const int r = i / VT, c = i - r * VT;
    dSf[r * ldF + c] = p.dS_T[sbase + r * V + c];
    if constexpr (G::kBf16) dSop[r * ldS + c] = from_f<T>(dSf[r * ldF + c]);
  }

  for (int c = p.nc - 1; c >= 0; --c) {
    if (S == 1) {
      issue(c);
      cp_async_wait<0>();
    } else if (c > 0) {  // the buffers of chunk c - 1 were last read by chunk c + 1, before its final barrier
      issue(c - 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* Ws = buf(Sm::W, Sm::kLK, c);
    const T* Qs = buf(Sm::Qg, Sm::kLK, c);
    const T* Ks = buf(Sm::Kl, Sm::kLK, c);
    const T* Ps = buf(Sm::P, Sm::kLL, c);
    const T* dOs = buf(Sm::dO, Sm::kLV, c);
    store_tile(p.dstates + ((static_cast<int64_t>(b) * p.H + h) * p.nc + c) * kK * V + col0, V, dSf, ldF, kK, VT);
    mm<T, kL, VT>(f1, ldF, false, 0.f, term<T>(Ks, ldK, false, dSop, ldS, false, kK),  // dU = Kl dS' + P^T dO
                  term<T>(Ps, ldL, true, dOs, ldV, false, kL));
    __syncthreads();
    float* dut = p.dUt + bch(c) * kL * V + col0;
    for (int i = threadIdx.x; i < kL * VT / 4; i += kThreads) {
      const int r = i / (VT / 4), cc = (i - r * (VT / 4)) * 4;
      float x[4];
      load<4>(f1 + r * ldF + cc, x);
      store<4>(dut + r * V + cc, x);
#pragma unroll
      for (int j = 0; j < 4; ++j) x[j] = -x[j];
      store<4>(dUn + r * ldV + cc, x);
    }
    __syncthreads();  // fp32: dSop is dSf, read above and rewritten below
    mm<T, kK, VT>(dSf, ldF, true, p.decay[bch(c)], term<T>(Qs, ldK, true, dOs, ldV, false, kL),
                  term<T>(Ws, ldK, true, dUn, ldV, false, kL));
    __syncthreads();
    if constexpr (G::kBf16) {
      to_op(dSop, ldS, dSf, ldF, kK, VT);
      __syncthreads();
    }
  }
  store_tile(p.dh0 + sbase, V, dSf, ldF, kK, VT);
}

template <typename T>
struct ShareParams {
  const T *U, *dO, *states_op;
  const float *states, *dstates, *dU;
  float *dW, *dQg, *dKl, *dP, *ddecay;
  int B, nc, H, V;
};

// Shared memory of a share block: role 0 uses acc0 = dW, acc1 = dQg, X = S, Y = -dU; role 1 acc0 = dKl,
// acc1 = dP, X = dS', Y = U; both Z = dO. The sums over V are fp32 [L, K + 4] and [L, K + 4] resp. [L, L + 4].
template <typename T>
struct ShareSmem {
  using G = Geo<T>;
  static constexpr int ldA = kK + 4;
  static constexpr size_t acc0 = 0;
  static constexpr size_t acc1 = carve(acc0, sizeof(float) * kL * ldA);
  static constexpr size_t X = carve(acc1, sizeof(float) * kL * ldA);
  static constexpr size_t Y = carve(X, sizeof(T) * kK * G::ldV);
  static constexpr size_t Z = carve(Y, sizeof(T) * kL * G::ldV);
  static constexpr size_t red = carve(Z, sizeof(T) * kL * G::ldV);
  static constexpr size_t bytes = carve(red, sizeof(float) * kWarps);
};

template <typename T>
__global__ void __launch_bounds__(kThreads, 2) gated_delta_share_bwd_kernel(const ShareParams<T> p) {
  using G = Geo<T>;
  using Sm = ShareSmem<T>;
  constexpr int VT = G::VT, ldV = G::ldV, ldA = Sm::ldA;
  extern __shared__ __align__(128) unsigned char smem[];
  float* acc0 = reinterpret_cast<float*>(smem + Sm::acc0);
  float* acc1 = reinterpret_cast<float*>(smem + Sm::acc1);
  T* Xs = reinterpret_cast<T*>(smem + Sm::X);
  T* Ys = reinterpret_cast<T*>(smem + Sm::Y);
  T* Zs = reinterpret_cast<T*>(smem + Sm::Z);
  float* red = reinterpret_cast<float*>(smem + Sm::red);

  const int role = blockIdx.x & 1;
  const int64_t bch = blockIdx.x >> 1;  // (b, c, h), h fastest
  const int h = static_cast<int>(bch % p.H), c = static_cast<int>((bch / p.H) % p.nc);
  const int b = static_cast<int>(bch / (static_cast<int64_t>(p.H) * p.nc));
  const int64_t V = p.V;
  const int64_t soff = ((static_cast<int64_t>(b) * p.H + h) * p.nc + c) * kK * V;  // states, dstates [b,h,c]
  const T* dO = p.dO + ((static_cast<int64_t>(b) * p.nc + c) * kL * p.H + h) * V;
  float part = 0.f;  // role 1: this thread's share of sum(S o dS')
  for (int col0 = 0; col0 < p.V; col0 += VT) {
    copy_tile(Zs, ldV, dO + col0, p.H * V, kL, VT);
    if (role == 0) {
      copy_tile(Xs, ldV, p.states_op + soff + col0, V, kK, VT);
      load_op(Ys, ldV, p.dU + bch * kL * V + col0, V, kL, VT, -1.f);
    } else {
      copy_tile(Ys, ldV, p.U + bch * kL * V + col0, V, kL, VT);
      for (int i = threadIdx.x; i < kK * VT / 4; i += kThreads) {  // dS' as an operand, and sum(S o dS')
        const int r = i / (VT / 4), cc = (i - r * (VT / 4)) * 4;
        const float4 d = __ldg(reinterpret_cast<const float4*>(p.dstates + soff + r * V + col0 + cc));
        const float4 s = __ldg(reinterpret_cast<const float4*>(p.states + soff + r * V + col0 + cc));
        part += s.x * d.x + s.y * d.y + s.z * d.z + s.w * d.w;
        const float x[4] = {d.x, d.y, d.z, d.w};
        store<4>(Xs + r * ldV + cc, x);
      }
    }
    __syncthreads();
    const bool acc = col0 > 0;
    if (role == 0) {
      mm<T, kL, kK>(acc0, ldA, acc, 1.f, term<T>(Ys, ldV, false, Xs, ldV, true, VT));  // dW += -dU S^T
      mm<T, kL, kK>(acc1, ldA, acc, 1.f, term<T>(Zs, ldV, false, Xs, ldV, true, VT));  // dQg += dO S^T
    } else {
      mm<T, kL, kK>(acc0, ldA, acc, 1.f, term<T>(Ys, ldV, false, Xs, ldV, true, VT));  // dKl += U dS'^T
      mm<T, kL, kL>(acc1, ldA, acc, 1.f, term<T>(Zs, ldV, false, Ys, ldV, true, VT));  // dP += dO U^T
    }
    __syncthreads();
  }
  if (role == 0) {
    store_tile(p.dW + bch * kL * kK, kK, acc0, ldA, kL, kK);
    store_tile(p.dQg + bch * kL * kK, kK, acc1, ldA, kL, kK);
  } else {
    store_tile(p.dKl + bch * kL * kK, kK, acc0, ldA, kL, kK);
    store_tile(p.dP + bch * kL * kL, kL, acc1, ldA, kL, kL);
    const float dd = block_sum(part, red);
    if (threadIdx.x == 0) p.ddecay[bch] = dd;
  }
}

}  // namespace

std::vector<at::Tensor> gated_delta_state_bwd(const at::Tensor& W, const at::Tensor& Qg, const at::Tensor& Kl,
                                              const at::Tensor& P, const at::Tensor& decay, const at::Tensor& U,
                                              const at::Tensor& states, const at::Tensor& states_op,
                                              const at::Tensor& dO, const at::Tensor& dS_T) {
  const c10::cuda::CUDAGuard guard(W.device());
  const int64_t B = W.size(0), nc = W.size(1), H = W.size(2), V = U.size(4);
  for (const auto* t : {&W, &Qg, &Kl, &P, &U, &states_op, &dO}) {
    ELMAN_CHECK_CUDA_TENSOR(*t);
    TORCH_CHECK(t->scalar_type() == W.scalar_type(), "gated_delta_state_bwd: operands must share one dtype");
  }
  ELMAN_CHECK_CUDA_TENSOR(decay);
  ELMAN_CHECK_CUDA_TENSOR(states);
  TORCH_CHECK(states.scalar_type() == at::kFloat, "gated_delta_state_bwd: states must be float32");
  ELMAN_CHECK_CUDA_TENSOR(dS_T);
  TORCH_CHECK(W.sizes() == at::IntArrayRef({B, nc, H, kL, kK}) && Qg.sizes() == W.sizes() && Kl.sizes() == W.sizes() &&
                  P.sizes() == at::IntArrayRef({B, nc, H, kL, kL}) && U.sizes() == at::IntArrayRef({B, nc, H, kL, V}) &&
                  decay.sizes() == at::IntArrayRef({B, nc, H}) && states.sizes() == at::IntArrayRef({B, H, nc, kK, V}) &&
                  states_op.sizes() == states.sizes() &&
                  dO.sizes() == at::IntArrayRef({B, nc * kL, H, V}) && dS_T.sizes() == at::IntArrayRef({B, H, kK, V}) &&
                  dS_T.scalar_type() == at::kFloat,
              "gated_delta_state_bwd: inconsistent shapes");
  const bool bf16 = W.scalar_type() == at::kBFloat16;
  auto f32 = W.options().dtype(at::kFloat);
  auto dUt = ops::empty_output({B, nc, H, kL, V}, f32);
  auto dstates = ops::empty_output({B, H, nc, kK, V}, f32);
  auto dh0 = ops::empty_output({B, H, kK, V}, f32);
  auto dW = ops::empty_output({B, nc, H, kL, kK}, f32);
  auto dQg = ops::empty_output({B, nc, H, kL, kK}, f32);
  auto dKl = ops::empty_output({B, nc, H, kL, kK}, f32);
  auto dP = ops::empty_output({B, nc, H, kL, kL}, f32);
  auto ddecay = ops::empty_output({B, nc, H}, f32);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    BwdParams<T> p{};
    p.W = reinterpret_cast<const T*>(W.data_ptr());
    p.Qg = reinterpret_cast<const T*>(Qg.data_ptr());
    p.Kl = reinterpret_cast<const T*>(Kl.data_ptr());
    p.P = reinterpret_cast<const T*>(P.data_ptr());
    p.dO = reinterpret_cast<const T*>(dO.data_ptr());
    p.decay = decay.data_ptr<float>();
    p.dS_T = dS_T.data_ptr<float>();
    p.dUt = dUt.data_ptr<float>();
    p.dstates = dstates.data_ptr<float>();
    p.dh0 = dh0.data_ptr<float>();
    p.B = int(B), p.nc = int(nc), p.H = int(H), p.V = int(V);
    launch(gated_delta_state_bwd_kernel<T>, B * H * (V / Geo<T>::VT), BwdSmem<T>::bytes, p);
    ShareParams<T> q{};
    q.U = reinterpret_cast<const T*>(U.data_ptr());
    q.dO = p.dO;
    q.states = states.data_ptr<float>();
    q.states_op = reinterpret_cast<const T*>(states_op.data_ptr());
    q.dstates = p.dstates;
    q.dU = p.dUt;
    q.dW = dW.data_ptr<float>();
    q.dQg = dQg.data_ptr<float>();
    q.dKl = dKl.data_ptr<float>();
    q.dP = dP.data_ptr<float>();
    q.ddecay = ddecay.data_ptr<float>();
    q.B = p.B, q.nc = p.nc, q.H = p.H, q.V = p.V;
    launch(gated_delta_share_bwd_kernel<T>, 2 * B * nc * H, ShareSmem<T>::bytes, q);
  };
  if (bf16) run(__nv_bfloat16{});
  else run(float{});
  return {dW, dUt, dQg, dKl, dP, ddecay, dh0};
}

}  // namespace elman::cuda
