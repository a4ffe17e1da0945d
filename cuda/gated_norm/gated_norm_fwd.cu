/* Gated RMSNorm, forward (ops/gated_norm/reference.h has the math). With s = silu(z), per row of C:
 *
 *   GateThenNorm (Mamba2):        u = y s;  rstd = 1 / sqrt(mean(u^2) + eps);  n = u rstd w
 *   NormThenGate (GatedDeltaNet): u = y;    rstd = 1 / sqrt(mean(u^2) + eps);  n = y rstd w s
 *
 * Both write n = y s rstd w; only the sum of squares differs. One warp per row (gated_norm.cuh): pass 1 reads y
 * and z and reduces the row's sum of squares, pass 2 re-reads them (L1/L2) and writes n. V = 4 values per access
 * where C and every row start allow it. Long rows (kRowMinC..kRowMaxC, Mamba2's 1792) run the row kernel
 * instead: one block per row, 8 values per thread held in registers, one pass over memory.
 * Saved for backward (by ops/gated_norm): y, z, w and rstd [rows].
 * Numerics: fp32 math; y, z, n in float32 or bfloat16, n rounded once.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/common/reduce.cuh"
#include "cuda/gated_norm/gated_norm.cuh"
#include "cuda/gated_norm/gated_norm.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
using gated_norm::Params;

template <typename Y, typename Z, typename O, int V>
__global__ void __launch_bounds__(gated_norm::kMaxWarps * 32) gated_norm_fwd_kernel(const Params<Y, Z, O> p) {
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; row < p.rows;
       row += nwarps) {
    const Y* y = p.y + p.ry.offset(row);
    const Z* z = p.z + p.rz.offset(row);
    float ss = 0.f;
    for (int c = lane * V; c < p.C; c += 32 * V) {
      float yv[V], zv[V];
      load<V>(y + c, yv);
      load<V>(z + c, zv);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float u = p.gate_first ? yv[j] * zv[j] * sigmoid(zv[j]) : yv[j];
        ss = fmaf(u, u, ss);
      }
    }
    const float rs = rsqrtf(warp_sum(ss) / p.C + p.eps);
    if (lane == 0) p.rstd[row] = rs;
    O* n = p.n + row * p.C;
    for (int c = lane * V; c < p.C; c += 32 * V) {
      float yv[V], zv[V], wv[V];
      load<V>(y + c, yv);
      load<V>(z + c, zv);
      load<V>(p.w + c, wv);
#pragma unroll
      for (int j = 0; j < V; ++j) yv[j] = yv[j] * zv[j] * sigmoid(zv[j]) * rs * wv[j];
      store<V>(n + c, yv);
    }
  }
}

// Long rows: one block per row (rows strided over the grid), thread t owns the kRowE values from t kRowE; the row
// is read once into registers, its sum of squares reduced over the block, n written from the registers.
template <typename Y, typename Z, typename O>
__global__ void __launch_bounds__(gated_norm::kRowMaxC / gated_norm::kRowE) gated_norm_fwd_row_kernel(const Params<Y, Z, O> p) {
  constexpr int E = gated_norm::kRowE;
  __shared__ float red[32];
  const int c = threadIdx.x * E;
  const bool mine = c < p.C;
  float wv[E];
  if (mine) load<E>(p.w + c, wv);
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    float yv[E], zv[E];
    float ss = 0.f;
    if (mine) {
      load<E>(p.y + p.ry.offset(row) + c, yv);
      load<E>(p.z + p.rz.offset(row) + c, zv);
#pragma unroll
      for (int j = 0; j < E; ++j) {
        zv[j] *= sigmoid(zv[j]);  // s = silu(z)
        const float u = p.gate_first ? yv[j] * zv[j] : yv[j];
        ss = fmaf(u, u, ss);
      }
    }
    const float rs = rsqrtf(block_sum(ss, red) / p.C + p.eps);
    if (threadIdx.x == 0) p.rstd[row] = rs;
    if (mine) {
#pragma unroll
      for (int j = 0; j < E; ++j) yv[j] = yv[j] * zv[j] * rs * wv[j];
      store<E>(p.n + row * p.C + c, yv);
    }
  }
}
}  // namespace

std::vector<at::Tensor> gated_norm_fwd(const at::Tensor& y_in, const at::Tensor& z_in, const at::Tensor& w_in,
                                       bool gate_first, double eps, at::ScalarType out_dtype) {
  const c10::cuda::CUDAGuard guard(y_in.device());
  const int64_t C = y_in.size(-1), rows = y_in.numel() / C;
  TORCH_CHECK(C <= gated_norm::kMaxC, "gated_rms_norm: the kernel takes rows of up to ", gated_norm::kMaxC,
              " values, got ", C);
  gated_norm::Rows ry, rz;
  const auto y = gated_norm::with_rows(y_in, ry), z = gated_norm::with_rows(z_in, rz);
  auto w = w_in.to(at::kFloat).contiguous();
  auto n = ops::empty_output(y.sizes(), y.options().dtype(out_dtype));
  auto rstd = ops::empty_output({rows}, y.options().dtype(at::kFloat));
  if (rows == 0) return {n, rstd};
  const bool vec4 = gated_norm::rows_fit(y.data_ptr(), y.element_size(), ry, C, 4) &&
                    gated_norm::rows_fit(z.data_ptr(), z.element_size(), rz, C, 4) &&
                    aligned16({n.data_ptr(), w.data_ptr()});
  const bool row_kernel = gated_norm::row_kernel_fits(y.data_ptr(), y.element_size(), ry, C) &&
                          gated_norm::row_kernel_fits(z.data_ptr(), z.element_size(), rz, C) &&
                          gated_norm::row_operands_fit({&n, &w});
  const int warps = gated_norm::kMaxWarps;
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int grid = gated_norm::grid_for(rows, warps, sms);
  gated_norm::dispatch_types(y.scalar_type(), z.scalar_type(), out_dtype, [&](auto yt, auto zt, auto ot) {
    using Y = decltype(yt);
    using Z = decltype(zt);
    using O = decltype(ot);
    Params<Y, Z, O> p{};
    p.y = y.data_ptr<Y>(), p.ry = ry, p.z = z.data_ptr<Z>(), p.rz = rz, p.w = w.data_ptr<float>();
    p.rstd = rstd.data_ptr<float>(), p.n = n.data_ptr<O>();
    p.rows = rows, p.C = static_cast<int>(C), p.eps = static_cast<float>(eps), p.gate_first = gate_first;
    auto stream = at::cuda::getCurrentCUDAStream();
    if (row_kernel) {
      gated_norm_fwd_row_kernel<Y, Z, O>
          <<<gated_norm::row_grid(rows, C, sms), gated_norm::row_threads(C), 0, stream>>>(p);
    } else if (vec4) gated_norm_fwd_kernel<Y, Z, O, 4><<<grid, warps * 32, 0, stream>>>(p);
    else gated_norm_fwd_kernel<Y, Z, O, 1><<<grid, warps * 32, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {n, rstd};
}

}  // namespace elman::cuda
