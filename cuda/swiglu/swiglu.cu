/* SwiGLU gate (ops/swiglu/swiglu.h): one thread per output element (rows of h), fp32 math.
 *   forward  y = silu(g) * u
 *   backward dg = dy * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),  du = dy * silu(g)
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/swiglu/swiglu.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads) swiglu_fwd_kernel(const T* __restrict__ gu, T* __restrict__ y, int64_t n,
                                                              int64_t h) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n) return;
  const int64_t row = e / h, col = e - row * h, g_at = row * 2 * h + col;
  const float g = static_cast<float>(gu[g_at]), u = static_cast<float>(gu[g_at + h]);
  y[e] = static_cast<T>(g / (1.f + __expf(-g)) * u);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) swiglu_bwd_kernel(const T* __restrict__ gu, const T* __restrict__ dy,
                                                              T* __restrict__ dgu, int64_t n, int64_t h) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n) return;
  const int64_t row = e / h, col = e - row * h, g_at = row * 2 * h + col;
  const float g = static_cast<float>(gu[g_at]), u = static_cast<float>(gu[g_at + h]), d = static_cast<float>(dy[e]);
  const float sg = 1.f / (1.f + __expf(-g));
  dgu[g_at] = static_cast<T>(d * u * sg * (1.f + g * (1.f - sg)));
  dgu[g_at + h] = static_cast<T>(d * g * sg);
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
    swiglu_fwd_kernel<scalar_t><<<blocks_for(n, kThreads), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        gu.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), n, h);
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
    swiglu_bwd_kernel<scalar_t><<<blocks_for(n, kThreads), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        gu.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(), dgu.data_ptr<scalar_t>(), n, h);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return dgu;
}

}  // namespace elman::cuda
