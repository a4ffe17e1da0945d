/* Head split + RoPE (ops/rope/rope.h). One thread per (b, t, head) and V pairs (i, i + hd/2): it reads them
 * from q, k and v in qkv [B,T,3,H,hd] and writes the rotated q, k pairs and the v pairs, V elements per access
 * (V = 16 bytes of elements where that divides hd/2 and the tensors are 16-byte aligned, else 1). The angle
 * t * theta^(-2i/hd) and its sine and cosine are computed in fp32 in the thread (no tables). q, k, v are
 * stored [B,T,H,hd] and returned as [B,H,T,hd] views: the layout the flash/cuDNN attention kernels read and
 * write without copies (its output then reshapes to [B,T,H*hd] for free). The backward applies the inverse rotation to dq, dk and
 * writes dq, dk, dv back into dqkv [B,T,3,H,hd].
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "cuda/common/cuda_check.h"
#include "cuda/rope/rope.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
constexpr int kThreads = 256;

struct Index {  // where thread p's pair lives
  int64_t in, out;  // qkv offset of q's element i; offset of element i in q, k, v stored [B,T,H,hd]
  int i, t;
};
__device__ __forceinline__ Index locate(int64_t p, int T, int H, int hd) {
  const int half = hd / 2;
  Index x;
  x.i = static_cast<int>(p % half);
  int64_t rest = p / half;
  const int h = static_cast<int>(rest % H);
  rest /= H;
  x.t = static_cast<int>(rest % T);
  const int64_t b = rest / T;
  x.in = ((b * T + x.t) * 3 * H + h) * hd + x.i;
  x.out = ((b * T + x.t) * H + h) * hd + x.i;
  return x;
}
__device__ __forceinline__ void angle(int t, int i, int hd, float theta, float* c, float* s) {
  const float inv = powf(theta, -static_cast<float>(2 * i) / static_cast<float>(hd));
  sincosf(static_cast<float>(t) * inv, s, c);
}

// V consecutive elements of a row, moved as one access (16 bytes where the width allows it).
template <typename T_, int V>
struct alignas(sizeof(T_) * V) Vec {
  T_ x[V];
};
template <typename T_, int V>
__device__ __forceinline__ Vec<T_, V> load(const T_* p) {
  return *reinterpret_cast<const Vec<T_, V>*>(p);
}
template <typename T_, int V>
__device__ __forceinline__ void store(T_* p, const Vec<T_, V>& v) {
  *reinterpret_cast<Vec<T_, V>*>(p) = v;
}

// Thread p handles the V pairs (i, i + hd/2), i = V p mod hd/2 ... + V - 1, of one (b, t, head); V divides hd/2.
template <typename T_, int V>
__global__ void __launch_bounds__(kThreads) rope_fwd_kernel(const T_* __restrict__ qkv, T_* __restrict__ q,
                                                            T_* __restrict__ k, T_* __restrict__ v, int64_t groups,
                                                            int T, int H, int hd, float theta) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= groups) return;
  const Index x = locate(p * V, T, H, hd);
  const int half = hd / 2;
  const int64_t qk = static_cast<int64_t>(H) * hd;  // offset between q, k and v in qkv
  float c[V], s[V];
#pragma unroll
  for (int j = 0; j < V; ++j) angle(x.t, x.i + j, hd, theta, &c[j], &s[j]);
  T_* outs[2] = {q, k};
#pragma unroll
  for (int part = 0; part < 2; ++part) {
    const auto a = load<T_, V>(qkv + x.in + part * qk), b = load<T_, V>(qkv + x.in + part * qk + half);
    Vec<T_, V> ra, rb;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float fa = static_cast<float>(a.x[j]), fb = static_cast<float>(b.x[j]);
      ra.x[j] = static_cast<T_>(fa * c[j] - fb * s[j]);
      rb.x[j] = static_cast<T_>(fa * s[j] + fb * c[j]);
    }
    store(outs[part] + x.out, ra);
    store(outs[part] + x.out + half, rb);
  }
  store(v + x.out, load<T_, V>(qkv + x.in + 2 * qk));
  store(v + x.out + half, load<T_, V>(qkv + x.in + 2 * qk + half));
}

template <typename T_, int V>
__global__ void __launch_bounds__(kThreads) rope_bwd_kernel(const T_* __restrict__ dq, const T_* __restrict__ dk,
                                                            const T_* __restrict__ dv, T_* __restrict__ dqkv,
                                                            int64_t groups, int T, int H, int hd, float theta) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= groups) return;
  const Index x = locate(p * V, T, H, hd);
  const int half = hd / 2;
  const int64_t qk = static_cast<int64_t>(H) * hd;
  float c[V], s[V];
#pragma unroll
  for (int j = 0; j < V; ++j) angle(x.t, x.i + j, hd, theta, &c[j], &s[j]);
  const Vec<T_, V> zero{};
  const T_* grads[2] = {dq, dk};
#pragma unroll
  for (int part = 0; part < 2; ++part) {
    const auto a = grads[part] ? load<T_, V>(grads[part] + x.out) : zero;
    const auto b = grads[part] ? load<T_, V>(grads[part] + x.out + half) : zero;
    Vec<T_, V> ra, rb;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float fa = static_cast<float>(a.x[j]), fb = static_cast<float>(b.x[j]);
      ra.x[j] = static_cast<T_>(fa * c[j] + fb * s[j]);
      rb.x[j] = static_cast<T_>(fb * c[j] - fa * s[j]);
    }
    store(dqkv + x.in + part * qk, ra);
    store(dqkv + x.in + part * qk + half, rb);
  }
  store(dqkv + x.in + 2 * qk, dv ? load<T_, V>(dv + x.out) : zero);
  store(dqkv + x.in + 2 * qk + half, dv ? load<T_, V>(dv + x.out + half) : zero);
}

// Calls f(std::integral_constant<int, V>{}) with V = 16 bytes of elements where V divides hd/2 and every
// pointer is 16-byte aligned, else V = 1.
template <typename T_, typename F>
void with_width(int64_t hd, std::initializer_list<const void*> ptrs, F&& f) {
  constexpr int kWide = 16 / sizeof(T_);
  bool wide = (hd / 2) % kWide == 0;
  for (const void* p : ptrs) wide = wide && reinterpret_cast<uintptr_t>(p) % 16 == 0;
  if (wide) return f(std::integral_constant<int, kWide>{});
  f(std::integral_constant<int, 1>{});
}
}  // namespace

std::vector<at::Tensor> rope_qkv_fwd(const at::Tensor& qkv_in, int64_t heads, double theta) {
  const c10::cuda::CUDAGuard guard(qkv_in.device());
  ELMAN_CHECK_FLOAT_DTYPE(qkv_in);
  auto qkv = qkv_in.contiguous();
  const int64_t B = qkv.size(0), T = qkv.size(1), hd = qkv.size(2) / (3 * heads);
  auto q = ops::empty_output({B, T, heads, hd}, qkv.options());
  auto k = ops::empty_output({B, T, heads, hd}, qkv.options());
  auto v = ops::empty_output({B, T, heads, hd}, qkv.options());
  const int64_t pairs = B * T * heads * (hd / 2);
  auto views = [&] { return std::vector<at::Tensor>{q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)}; };
  if (pairs == 0) return views();
  ELMAN_DISPATCH_FLOAT_BF16(qkv.scalar_type(), "rope_qkv_fwd", [&] {
    const scalar_t* in = qkv.data_ptr<scalar_t>();
    scalar_t *qp = q.data_ptr<scalar_t>(), *kp = k.data_ptr<scalar_t>(), *vp = v.data_ptr<scalar_t>();
    with_width<scalar_t>(hd, {in, qp, kp, vp}, [&](auto width) {
      constexpr int V = decltype(width)::value;
      rope_fwd_kernel<scalar_t, V><<<blocks_for(pairs / V, kThreads), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          in, qp, kp, vp, pairs / V, static_cast<int>(T), static_cast<int>(heads), static_cast<int>(hd),
          static_cast<float>(theta));
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return views();
}

at::Tensor rope_qkv_bwd(const at::Tensor& dq_in, const at::Tensor& dk_in, const at::Tensor& dv_in, int64_t B, int64_t T,
                        int64_t width, int64_t heads, double theta, at::ScalarType dtype) {
  const auto& any = dq_in.defined() ? dq_in : dk_in.defined() ? dk_in : dv_in;
  TORCH_CHECK(any.defined(), "rope_qkv_bwd: no gradient");
  const c10::cuda::CUDAGuard guard(any.device());
  // [B,H,T,hd] gradients to [B,T,H,hd] storage (no copy when attention's backward wrote them that way).
  auto prep = [&](const at::Tensor& g) { return g.defined() ? g.to(dtype).transpose(1, 2).contiguous() : at::Tensor(); };
  auto dq = prep(dq_in), dk = prep(dk_in), dv = prep(dv_in);
  auto dqkv = ops::empty_output({B, T, width}, any.options().dtype(dtype));
  const int64_t hd = width / (3 * heads), pairs = B * T * heads * (hd / 2);
  if (pairs == 0) return dqkv;
  ELMAN_DISPATCH_FLOAT_BF16(dtype, "rope_qkv_bwd", [&] {
    auto ptr = [](const at::Tensor& g) { return g.defined() ? g.data_ptr<scalar_t>() : nullptr; };
    scalar_t* out = dqkv.data_ptr<scalar_t>();
    with_width<scalar_t>(hd, {ptr(dq), ptr(dk), ptr(dv), out}, [&](auto width) {  // nullptr is aligned
      constexpr int V = decltype(width)::value;
      rope_bwd_kernel<scalar_t, V><<<blocks_for(pairs / V, kThreads), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          ptr(dq), ptr(dk), ptr(dv), out, pairs / V, static_cast<int>(T), static_cast<int>(heads),
          static_cast<int>(hd), static_cast<float>(theta));
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return dqkv;
}

}  // namespace elman::cuda
