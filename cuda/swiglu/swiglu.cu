/* SwiGLU gate and self-gate (ops/swiglu/swiglu.h): fp32 math; each thread moves 16 bytes of a row (8 bf16 or 4
 * fp32 elements) when the half width h (self-gate: the element count) is a multiple of that (and the pointers are
 * 16-byte aligned), else one element. With s = sigmoid(g) (self-gate: s = sigmoid(x)):
 *   swiglu    forward y = silu(g) * u = g s u     backward dg = dy * u * s * (1 + g * (1 - s)),  du = dy * g s
 *   selfgate  forward y = x * silu(x) = x^2 s     backward dx = dy * x * s * (2 + x * (1 - s))
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/common/sigmoid.cuh"
#include "cuda/common/vec.cuh"
#include "cuda/swiglu/swiglu.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
constexpr int kThreads = 256;

// V consecutive elements of one row per thread (h % V == 0).
template <typename T, int V>
__global__ void __launch_bounds__(kThreads) swiglu_fwd_kernel(const T* __restrict__ gu, T* __restrict__ y, int64_t n,
                                                              int64_t h) {
  const int64_t e = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (e >= n) return;
  const int64_t row = e / h, g_at = row * 2 * h + (e - row * h);
  float g[V], u[V];
  load<V>(gu + g_at, g);
  load<V>(gu + g_at + h, u);
#pragma unroll
  for (int j = 0; j < V; ++j) g[j] = g[j] / (1.f + __expf(-g[j])) * u[j];
  store<V>(y + e, g);
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) swiglu_bwd_kernel(const T* __restrict__ gu, const T* __restrict__ dy,
                                                              T* __restrict__ dgu, int64_t n, int64_t h) {
  const int64_t e = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (e >= n) return;
  const int64_t row = e / h, g_at = row * 2 * h + (e - row * h);
  float g[V], u[V], d[V], dg[V], du[V];
  load<V>(gu + g_at, g);
  load<V>(gu + g_at + h, u);
  load<V>(dy + e, d);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const float sg = fast_sigmoid(g[j]);
    dg[j] = d[j] * u[j] * sg * (1.f + g[j] * (1.f - sg));
    du[j] = d[j] * g[j] * sg;
  }
  store<V>(dgu + g_at, dg);
  store<V>(dgu + g_at + h, du);
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) selfgate_fwd_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                                int64_t n) {
  const int64_t e = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (e >= n) return;
  float v[V];
  load<V>(x + e, v);
#pragma unroll
  for (int j = 0; j < V; ++j) v[j] = v[j] * v[j] / (1.f + __expf(-v[j]));
  store<V>(y + e, v);
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) selfgate_bwd_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                                                T* __restrict__ dx, int64_t n) {
  const int64_t e = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (e >= n) return;
  float v[V], d[V];
  load<V>(x + e, v);
  load<V>(dy + e, d);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const float s = fast_sigmoid(v[j]);
    d[j] = d[j] * v[j] * s * (2.f + v[j] * (1.f - s));
  }
  store<V>(dx + e, d);
}

// Launches kernel<T, V> with 16-byte accesses when the half width h and the pointers allow it, else one element
// per thread.
template <typename T, typename Launch>
void launch(int64_t n, int64_t h, std::initializer_list<const void*> ptrs, Launch&& f) {
  with_vec_width<T>(h, ptrs, [&](auto v) { f(v, blocks_for(n / decltype(v)::value, kThreads)); });
}
}  // namespace

at::Tensor swiglu_fwd(const at::Tensor& gu_in) {
  const c10::cuda::CUDAGuard guard(gu_in.device());
  ELMAN_CHECK_FLOAT_DTYPE(gu_in);
  auto gu = gu_in.contiguous();
  auto shape = gu.sizes().vec();
  const int64_t h = shape.back() / 2;
  shape.back() = h;
  auto y = ops::empty_output(shape, gu.options());
  const int64_t n = y.numel();
  if (n == 0) return y;
  ELMAN_DISPATCH_FLOAT_BF16(gu.scalar_type(), "swiglu_fwd", [&] {
    launch<scalar_t>(n, h, {gu.data_ptr(), y.data_ptr()}, [&](auto v, int blocks) {
      swiglu_fwd_kernel<scalar_t, decltype(v)::value><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          gu.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), n, h);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

at::Tensor swiglu_bwd(const at::Tensor& gu_in, const at::Tensor& dy_in) {
  const c10::cuda::CUDAGuard guard(gu_in.device());
  auto gu = gu_in.contiguous();
  auto dy = dy_in.to(gu.scalar_type()).contiguous();
  auto dgu = ops::empty_output(gu.sizes(), gu.options());
  const int64_t n = dy.numel(), h = gu.size(-1) / 2;
  if (n == 0) return dgu;
  ELMAN_DISPATCH_FLOAT_BF16(gu.scalar_type(), "swiglu_bwd", [&] {
    launch<scalar_t>(n, h, {gu.data_ptr(), dy.data_ptr(), dgu.data_ptr()}, [&](auto v, int blocks) {
      swiglu_bwd_kernel<scalar_t, decltype(v)::value><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          gu.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(), dgu.data_ptr<scalar_t>(), n, h);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return dgu;
}

at::Tensor selfgate_fwd(const at::Tensor& x_in) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  ELMAN_CHECK_FLOAT_DTYPE(x_in);
  auto x = x_in.contiguous();
  auto y = ops::empty_output(x.sizes(), x.options());
  const int64_t n = x.numel();
  if (n == 0) return y;
  ELMAN_DISPATCH_FLOAT_BF16(x.scalar_type(), "selfgate_fwd", [&] {
    launch<scalar_t>(n, n, {x.data_ptr(), y.data_ptr()}, [&](auto v, int blocks) {
      selfgate_fwd_kernel<scalar_t, decltype(v)::value><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), n);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

at::Tensor selfgate_bwd(const at::Tensor& x_in, const at::Tensor& dy_in) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  auto x = x_in.contiguous();
  auto dy = dy_in.to(x.scalar_type()).contiguous();
  auto dx = ops::empty_output(x.sizes(), x.options());
  const int64_t n = x.numel();
  if (n == 0) return dx;
  ELMAN_DISPATCH_FLOAT_BF16(x.scalar_type(), "selfgate_bwd", [&] {
    launch<scalar_t>(n, n, {x.data_ptr(), dy.data_ptr(), dx.data_ptr()}, [&](auto v, int blocks) {
      selfgate_bwd_kernel<scalar_t, decltype(v)::value><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          x.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), n);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return dx;
}

}  // namespace elman::cuda
