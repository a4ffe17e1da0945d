/* Gated RMSNorm, backward (ops/gated_norm/README.md has the derivation). With s = silu(z), s' = its derivative,
 * rstd from the forward and the row's dot = sum_c w gn y s (the same expression for both orders):
 *
 *   GateThenNorm: du = rstd w gn - y s rstd^3 dot / C;  dy = du s;  dz = du y s'
 *   NormThenGate: du = rstd w gn s - y rstd^3 dot / C;  dy = du;    dz = gn y rstd w s'
 *   dw = sum over rows of gn y s rstd
 *
 * One warp per row as the forward: pass 1 reduces dot, pass 2 writes dy and dz (long rows: the row kernel, one
 * block per row with the row in registers, as the forward; its threads keep their columns' dw in registers). Each warp adds its dw terms to
 * its own row of shared memory (a lane always owns the same columns, so no atomics); at the end the block sums its
 * warps' rows in warp order into one partial per block, part [gridDim.x, C], which the launcher sums over dim 0:
 * deterministic. Warps per block: as many as fit 48 KB of rows (8 for C <= 1536, 1 for C up to 12288).
 * dz is written through two-level row strides like z's: the layers pass the gate's columns of their projection's
 * gradient (ops/common/grad_sink.h).
 * Numerics: fp32 math; dy, dz rounded once to y's and z's dtypes.
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
__global__ void __launch_bounds__(gated_norm::kMaxWarps * 32) gated_norm_bwd_kernel(const Params<Y, Z, O> p) {
  extern __shared__ float dw_s[];  // [warps][C]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* dw = dw_s + warp * p.C;
  for (int c = lane * V; c < p.C; c += 32 * V)
#pragma unroll
    for (int j = 0; j < V; ++j) dw[c + j] = 0.f;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; row < p.rows;
       row += nwarps) {
    const Y* y = p.y + p.ry.offset(row);
    const Z* z = p.z + p.rz.offset(row);
    const O* gn = p.gn + row * p.C;
    const float rs = p.rstd[row];
    float dot = 0.f;
    for (int c = lane * V; c < p.C; c += 32 * V) {
      float yv[V], zv[V], wv[V], g[V];
      load<V>(y + c, yv);
      load<V>(z + c, zv);
      load<V>(p.w + c, wv);
      load<V>(gn + c, g);
#pragma unroll
      for (int j = 0; j < V; ++j) dot = fmaf(wv[j] * g[j], yv[j] * zv[j] * sigmoid(zv[j]), dot);
    }
    const float coef = warp_sum(dot) * rs * rs * rs / p.C;
    for (int c = lane * V; c < p.C; c += 32 * V) {
      float yv[V], zv[V], wv[V], g[V], dyv[V], dzv[V];
      load<V>(y + c, yv);
      load<V>(z + c, zv);
      load<V>(p.w + c, wv);
      load<V>(gn + c, g);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float sg = sigmoid(zv[j]), s = zv[j] * sg, ds = sg * (1.f + zv[j] * (1.f - sg));
        if (p.gate_first) {
          const float du = rs * wv[j] * g[j] - yv[j] * s * coef;
          dyv[j] = du * s;
          dzv[j] = du * yv[j] * ds;
        } else {
          dyv[j] = rs * wv[j] * g[j] * s - yv[j] * coef;
          dzv[j] = g[j] * yv[j] * rs * wv[j] * ds;
        }
        dw[c + j] = fmaf(g[j] * yv[j], s * rs, dw[c + j]);
      }
      store<V>(p.dy + row * p.C + c, dyv);
      store<V>(p.dz + p.rdz.offset(row) + c, dzv);
    }
  }
  __syncthreads();
  const int warps = blockDim.x >> 5;
  for (int c = threadIdx.x; c < p.C; c += blockDim.x) {
    float sum = 0.f;
    for (int k = 0; k < warps; ++k) sum += dw_s[k * p.C + c];
    p.part[static_cast<int64_t>(blockIdx.x) * p.C + c] = sum;
  }
}

// Long rows: one block per row (rows strided over the grid) as the forward's row kernel; y, z and gn read once into
// registers, dot reduced over the block, dy and dz written; each thread adds its columns' dw terms in registers
// over the rows it visits and writes them as the block's partial (the same fixed order on every run).
template <typename Y, typename Z, typename O>
__global__ void __launch_bounds__(gated_norm::kRowMaxC / gated_norm::kRowE) gated_norm_bwd_row_kernel(const Params<Y, Z, O> p) {
  constexpr int E = gated_norm::kRowE;
  __shared__ float red[32];
  const int c = threadIdx.x * E;
  const bool mine = c < p.C;
  float wv[E], dw[E];
#pragma unroll
  for (int j = 0; j < E; ++j) dw[j] = 0.f;
  if (mine) load<E>(p.w + c, wv);
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    float yv[E], sv[E], dsv[E], g[E];
    float dot = 0.f;
    if (mine) {
      load<E>(p.y + p.ry.offset(row) + c, yv);
      load<E>(p.z + p.rz.offset(row) + c, sv);
      load<E>(p.gn + row * p.C + c, g);
#pragma unroll
      for (int j = 0; j < E; ++j) {
        const float z = sv[j], sg = sigmoid(z);
        sv[j] = z * sg, dsv[j] = sg * (1.f + z * (1.f - sg));
        dot = fmaf(wv[j] * g[j], yv[j] * sv[j], dot);
      }
    }
    const float rs = p.rstd[row];
    const float coef = block_sum(dot, red) * rs * rs * rs / p.C;
    if (!mine) continue;
    float dyv[E], dzv[E];
#pragma unroll
    for (int j = 0; j < E; ++j) {
      if (p.gate_first) {
        const float du = rs * wv[j] * g[j] - yv[j] * sv[j] * coef;
        dyv[j] = du * sv[j];
        dzv[j] = du * yv[j] * dsv[j];
      } else {
        dyv[j] = rs * wv[j] * g[j] * sv[j] - yv[j] * coef;
        dzv[j] = g[j] * yv[j] * rs * wv[j] * dsv[j];
      }
      dw[j] = fmaf(g[j] * yv[j], sv[j] * rs, dw[j]);
    }
    store<E>(p.dy + row * p.C + c, dyv);
    store<E>(p.dz + p.rdz.offset(row) + c, dzv);
  }
  if (mine) store<E>(p.part + static_cast<int64_t>(blockIdx.x) * p.C + c, dw);
}
}  // namespace

std::vector<at::Tensor> gated_norm_bwd(const at::Tensor& y_in, const at::Tensor& z_in, const at::Tensor& w_in,
                                       const at::Tensor& rstd, const at::Tensor& gn_in, bool gate_first,
                                       const at::Tensor& dz_into) {
  const c10::cuda::CUDAGuard guard(y_in.device());
  const int64_t C = y_in.size(-1), rows = y_in.numel() / C;
  gated_norm::Rows ry, rz, rdz;
  const auto y = gated_norm::with_rows(y_in, ry), z = gated_norm::with_rows(z_in, rz);
  auto w = w_in.to(at::kFloat).contiguous();
  const auto out_dtype = gn_in.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kFloat;
  auto gn = gn_in.to(out_dtype).contiguous();
  auto dy = ops::empty_output(y.sizes(), y.options());
  TORCH_CHECK(!dz_into.defined() || (dz_into.sizes() == z.sizes() && dz_into.scalar_type() == z.scalar_type() &&
                                      dz_into.device() == z.device()),
              "gated_norm_bwd: dz_into must have z's shape, dtype and device");
  // dz goes straight into dz_into when the kernels can index its rows, else through a copy.
  const bool in_place = dz_into.defined() && gated_norm::row_layout(dz_into, rdz);
  auto dz = in_place ? dz_into : ops::empty_output(z.sizes(), z.options());
  if (!in_place) gated_norm::row_layout(dz, rdz);
  if (rows == 0) return {dy, dz_into.defined() ? dz_into : dz, at::zeros({C}, y.options().dtype(at::kFloat))};
  const bool vec4 = gated_norm::rows_fit(y.data_ptr(), y.element_size(), ry, C, 4) &&
                    gated_norm::rows_fit(z.data_ptr(), z.element_size(), rz, C, 4) &&
                    gated_norm::rows_fit(dz.data_ptr(), dz.element_size(), rdz, C, 4) &&
                    aligned16({gn.data_ptr(), dy.data_ptr(), w.data_ptr()});
  const bool row_kernel = gated_norm::row_kernel_fits(y.data_ptr(), y.element_size(), ry, C) &&
                          gated_norm::row_kernel_fits(z.data_ptr(), z.element_size(), rz, C) &&
                          gated_norm::row_kernel_fits(dz.data_ptr(), dz.element_size(), rdz, C) &&
                          gated_norm::row_operands_fit({&gn, &dy, &w});
  const int warps = static_cast<int>(std::clamp<int64_t>(gated_norm::kMaxC / C, 1, gated_norm::kMaxWarps));
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int grid = row_kernel ? gated_norm::row_grid(rows, C, sms) : gated_norm::grid_for(rows, warps, sms);
  auto part = ops::empty_output({grid, C}, y.options().dtype(at::kFloat));
  const size_t smem = static_cast<size_t>(warps) * C * sizeof(float);
  gated_norm::dispatch_types(y.scalar_type(), z.scalar_type(), out_dtype, [&](auto yt, auto zt, auto ot) {
    using Y = decltype(yt);
    using Z = decltype(zt);
    using O = decltype(ot);
    Params<Y, Z, O> p{};
    p.y = y.data_ptr<Y>(), p.ry = ry, p.z = z.data_ptr<Z>(), p.rz = rz, p.w = w.data_ptr<float>();
    p.rstd = rstd.data_ptr<float>(), p.gn = gn.data_ptr<O>(), p.dy = dy.data_ptr<Y>(), p.dz = dz.data_ptr<Z>();
    p.rdz = rdz;
    p.part = part.data_ptr<float>();
    p.rows = rows, p.C = static_cast<int>(C), p.gate_first = gate_first;
    auto stream = at::cuda::getCurrentCUDAStream();
    if (row_kernel) gated_norm_bwd_row_kernel<Y, Z, O><<<grid, gated_norm::row_threads(C), 0, stream>>>(p);
    else if (vec4) gated_norm_bwd_kernel<Y, Z, O, 4><<<grid, warps * 32, smem, stream>>>(p);
    else gated_norm_bwd_kernel<Y, Z, O, 1><<<grid, warps * 32, smem, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (dz_into.defined() && !in_place) dz = dz_into.copy_(dz);
  return {dy, dz, part.sum(0)};
}

}  // namespace elman::cuda
