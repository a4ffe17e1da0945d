/* Head split + RoPE (ops/rope/rope.h). One thread per (b, t, head, pair i): it reads the pair (i, i + hd/2) of
 * q, k and v from qkv [B,T,3,H,hd] and writes the rotated q, k pairs and the v pair; the angle t * theta^(-2i/hd)
 * and its sine and cosine are computed in fp32 in the thread (no tables). q, k, v are stored [B,T,H,hd] and
 * returned as [B,H,T,hd] views: the layout the flash/cuDNN attention kernels read and write without copies
 * (its output then reshapes to [B,T,H*hd] for free). The backward applies the inverse rotation to dq, dk and
 * writes dq, dk, dv back into dqkv [B,T,3,H,hd].
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

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

template <typename T_>
__global__ void __launch_bounds__(kThreads) rope_fwd_kernel(const T_* __restrict__ qkv, T_* __restrict__ q,
                                                            T_* __restrict__ k, T_* __restrict__ v, int64_t pairs,
                                                            int T, int H, int hd, float theta) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= pairs) return;
  const Index x = locate(p, T, H, hd);
  const int half = hd / 2;
  const int64_t qk = static_cast<int64_t>(H) * hd;  // offset between q, k and v in qkv
  float c, s;
  angle(x.t, x.i, hd, theta, &c, &s);
  T_* outs[2] = {q, k};
#pragma unroll
  for (int part = 0; part < 2; ++part) {
    const float a = static_cast<float>(qkv[x.in + part * qk]), b = static_cast<float>(qkv[x.in + part * qk + half]);
    outs[part][x.out] = static_cast<T_>(a * c - b * s);
    outs[part][x.out + half] = static_cast<T_>(a * s + b * c);
  }
  v[x.out] = qkv[x.in + 2 * qk];
  v[x.out + half] = qkv[x.in + 2 * qk + half];
}

template <typename T_>
__global__ void __launch_bounds__(kThreads) rope_bwd_kernel(const T_* __restrict__ dq, const T_* __restrict__ dk,
                                                            const T_* __restrict__ dv, T_* __restrict__ dqkv,
                                                            int64_t pairs, int T, int H, int hd, float theta) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= pairs) return;
  const Index x = locate(p, T, H, hd);
  const int half = hd / 2;
  const int64_t qk = static_cast<int64_t>(H) * hd;
  float c, s;
  angle(x.t, x.i, hd, theta, &c, &s);
  const T_* grads[2] = {dq, dk};
#pragma unroll
  for (int part = 0; part < 2; ++part) {
    float a = 0.f, b = 0.f;
    if (grads[part] != nullptr) a = static_cast<float>(grads[part][x.out]), b = static_cast<float>(grads[part][x.out + half]);
    dqkv[x.in + part * qk] = static_cast<T_>(a * c + b * s);
    dqkv[x.in + part * qk + half] = static_cast<T_>(b * c - a * s);
  }
  dqkv[x.in + 2 * qk] = dv != nullptr ? dv[x.out] : static_cast<T_>(0.f);
  dqkv[x.in + 2 * qk + half] = dv != nullptr ? dv[x.out + half] : static_cast<T_>(0.f);
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
    rope_fwd_kernel<scalar_t><<<blocks_for(pairs, kThreads), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        qkv.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), pairs,
        static_cast<int>(T), static_cast<int>(heads), static_cast<int>(hd), static_cast<float>(theta));
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
    rope_bwd_kernel<scalar_t><<<blocks_for(pairs, kThreads), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        ptr(dq), ptr(dk), ptr(dv), dqkv.data_ptr<scalar_t>(), pairs, static_cast<int>(T), static_cast<int>(heads),
        static_cast<int>(hd), static_cast<float>(theta));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return dqkv;
}

}  // namespace elman::cuda
