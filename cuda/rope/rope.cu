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

#include "cuda/common/cuda_check.h"
#include "cuda/common/vec.cuh"
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
  float a[V], b[V];
#pragma unroll
  for (int part = 0; part < 2; ++part) {
    load<V>(qkv + x.in + part * qk, a);
    load<V>(qkv + x.in + part * qk + half, b);
    float ra[V], rb[V];
#pragma unroll
    for (int j = 0; j < V; ++j) ra[j] = a[j] * c[j] - b[j] * s[j], rb[j] = a[j] * s[j] + b[j] * c[j];
    store<V>(outs[part] + x.out, ra);
    store<V>(outs[part] + x.out + half, rb);
  }
  copy<V>(qkv + x.in + 2 * qk, v + x.out);
  copy<V>(qkv + x.in + 2 * qk + half, v + x.out + half);
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
  // A gradient that did not reach the loss (nullptr) is zero.
  const auto load_or_zero = [&](const T_* g, int64_t at, float (&out)[V]) {
    if (g) return load<V>(g + at, out);
#pragma unroll
    for (int j = 0; j < V; ++j) out[j] = 0.f;
  };
  const T_* grads[2] = {dq, dk};
  float a[V], b[V];
#pragma unroll
  for (int part = 0; part < 2; ++part) {
    load_or_zero(grads[part], x.out, a);
    load_or_zero(grads[part], x.out + half, b);
    float ra[V], rb[V];
#pragma unroll
    for (int j = 0; j < V; ++j) ra[j] = a[j] * c[j] + b[j] * s[j], rb[j] = b[j] * c[j] - a[j] * s[j];
    store<V>(dqkv + x.in + part * qk, ra);
    store<V>(dqkv + x.in + part * qk + half, rb);
  }
  if (dv) {
    copy<V>(dv + x.out, dqkv + x.in + 2 * qk);
    copy<V>(dv + x.out + half, dqkv + x.in + 2 * qk + half);
  } else {
    const float zero[V] = {};
    store<V>(dqkv + x.in + 2 * qk, zero);
    store<V>(dqkv + x.in + 2 * qk + half, zero);
  }
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
    with_vec_width<scalar_t>(hd / 2, {in, qp, kp, vp}, [&](auto width) {
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
    with_vec_width<scalar_t>(hd / 2, {ptr(dq), ptr(dk), ptr(dv), out}, [&](auto width) {
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
