/* AdamW over lists of tensors in as few launches as their descriptors allow (kMaxTensors per launch, passed by
 * value, so a captured CUDA graph replays them unchanged). Block j of a launch owns chunk j - first[t] of the
 * tensor t whose blocks contain j: kChunk elements, 16-byte vectors (4 fp32, 4 bf16 copies in 8 bytes) when the
 * tensor's pointers allow, else one element a thread. Per element, in fp32 as ATen's _fused_adamw_:
 *   g /= divisor;  p -= lr wd p;  m = fma(b1, m, fma(-b1, g, g));  v = fma(b2, v, fma(-b2, g g, g g));
 *   p -= (lr / (1 - b1^step)) m / (sqrt(v) / sqrt(1 - b2^step) + eps);  low = bf16(p)
 * The gradient is not written back (ATen stores the divided gradient; nothing reads it after the step), and the
 * bf16 copy replaces the cast that the forward would otherwise make of every weight: 30 bytes an element in one
 * pass against 32 + 6 in two.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>

#include <algorithm>

#include "cuda/adamw/adamw.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/vec.cuh"

namespace elman::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 8192;  // elements per block
constexpr int kMaxTensors = 40;

struct Lists {
  float* p[kMaxTensors];
  const float* g[kMaxTensors];
  float* m[kMaxTensors];
  float* v[kMaxTensors];
  __nv_bfloat16* low[kMaxTensors];  // null: no copy
  const float* step[kMaxTensors];
  int64_t n[kMaxTensors];
  int first[kMaxTensors + 1];  // first block of each tensor; first[count] = the launch's blocks
  bool vec[kMaxTensors];
  int count;
};

struct Hyper {
  const float *lr, *skip, *divisor;  // divisor may be null
  float beta1, beta2, wd, eps;
};

struct Coef {
  float lr, div, beta1, beta2, wd, eps, step_size, bc2_sqrt;
};

__device__ __forceinline__ float update(float& p, float g, float& m, float& v, const Coef& c) {
  g /= c.div;
  p -= c.lr * c.wd * p;
  m = fmaf(c.beta1, m, fmaf(-c.beta1, g, g));
  v = fmaf(c.beta2, v, fmaf(-c.beta2, g * g, g * g));
  p -= c.step_size * m / (sqrtf(v) / c.bc2_sqrt + c.eps);
  return p;
}

__global__ void __launch_bounds__(kThreads) adamw_kernel(const Lists L, const Hyper h) {
  if (*h.skip == 1.f) return;
  int t = 0;
  while (t + 1 < L.count && L.first[t + 1] <= static_cast<int>(blockIdx.x)) ++t;
  const float step = *L.step[t];
  Coef c;
  c.lr = *h.lr, c.div = h.divisor ? *h.divisor : 1.f, c.beta1 = h.beta1, c.beta2 = h.beta2, c.wd = h.wd;
  c.eps = h.eps;
  c.step_size = c.lr / (1.f - powf(h.beta1, step));
  c.bc2_sqrt = sqrtf(1.f - powf(h.beta2, step));
  const int64_t begin = static_cast<int64_t>(blockIdx.x - L.first[t]) * kChunk;
  const int64_t end = min(L.n[t], begin + kChunk);
  float *P = L.p[t], *M = L.m[t], *Vv = L.v[t];
  const float* G = L.g[t];
  __nv_bfloat16* low = L.low[t];
  if (L.vec[t]) {
    const int64_t vend = begin + ((end - begin) / 4) * 4;
    for (int64_t i = begin + 4 * threadIdx.x; i < vend; i += 4 * kThreads) {
      float p[4], g[4], m[4], v[4];
      load<4>(P + i, p), load<4>(G + i, g), load<4>(M + i, m), load<4>(Vv + i, v);
#pragma unroll
      for (int j = 0; j < 4; ++j) update(p[j], g[j], m[j], v[j], c);
      store<4>(P + i, p), store<4>(M + i, m), store<4>(Vv + i, v);
      if (low) store<4>(low + i, p);
    }
    for (int64_t i = vend + threadIdx.x; i < end; i += kThreads) {  // the tensor's last n % 4 elements
      const float q = update(P[i], G[i], M[i], Vv[i], c);
      if (low) low[i] = __float2bfloat16(q);
    }
  } else {
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
      const float q = update(P[i], G[i], M[i], Vv[i], c);
      if (low) low[i] = __float2bfloat16(q);
    }
  }
}

}  // namespace

void adamw_step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                const std::vector<at::Tensor>& exp_avgs, const std::vector<at::Tensor>& exp_avg_sqs,
                const std::vector<at::Tensor>& steps, const std::vector<at::Tensor>& low, const at::Tensor& lr,
                const at::Tensor& skip, const std::optional<at::Tensor>& grad_divisor, double beta1, double beta2,
                double weight_decay, double eps) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n && steps.size() == n &&
                  (low.empty() || low.size() == n),
              "adamw_step: the tensor lists differ in length");
  if (n == 0) return;
  const c10::cuda::CUDAGuard guard(params[0].device());
  auto one = [&](const at::Tensor& t, const char* what) {
    TORCH_CHECK(t.is_cuda() && t.device() == params[0].device() && t.scalar_type() == at::kFloat && t.numel() == 1,
                "adamw_step: ", what, " must be a one-element float32 tensor on the parameters' GPU");
    return t.data_ptr<float>();
  };
  Hyper h{one(lr, "lr"), one(skip, "skip"), grad_divisor ? one(*grad_divisor, "grad_divisor") : nullptr,
          static_cast<float>(beta1), static_cast<float>(beta2), static_cast<float>(weight_decay),
          static_cast<float>(eps)};
  Lists L{};
  auto flush = [&] {
    if (L.count == 0) return;
    adamw_kernel<<<L.first[L.count], kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(L, h);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    L = Lists{};
  };
  for (size_t i = 0; i < n; ++i) {
    const auto &p = params[i], &g = grads[i], &m = exp_avgs[i], &v = exp_avg_sqs[i];
    for (const auto* t : {&p, &g, &m, &v}) {
      TORCH_CHECK(t->is_cuda() && t->device() == p.device() && t->scalar_type() == at::kFloat && t->is_contiguous() &&
                      t->numel() == p.numel(),
                  "adamw_step: parameter ", i, "'s tensors must be contiguous float32 on one GPU, of one size");
    }
    const bool has_low = !low.empty() && low[i].defined();
    if (has_low)
      TORCH_CHECK(low[i].device() == p.device() && low[i].scalar_type() == at::kBFloat16 && low[i].is_contiguous() &&
                      low[i].numel() == p.numel(),
                  "adamw_step: parameter ", i, "'s copy must be a contiguous bfloat16 tensor of its size");
    if (p.numel() == 0) continue;
    const int64_t blocks = (p.numel() + kChunk - 1) / kChunk;
    TORCH_CHECK(blocks < (int64_t(1) << 30), "adamw_step: parameter ", i, " is too large");
    if (L.count == kMaxTensors || L.first[L.count] + blocks >= (int64_t(1) << 31) - 1) flush();
    const int k = L.count++;
    L.p[k] = p.data_ptr<float>(), L.g[k] = g.data_ptr<float>(), L.m[k] = m.data_ptr<float>();
    L.v[k] = v.data_ptr<float>();
    L.low[k] = has_low ? reinterpret_cast<__nv_bfloat16*>(low[i].data_ptr()) : nullptr;
    L.step[k] = one(steps[i], "step");
    L.n[k] = p.numel();
    L.vec[k] = aligned16({L.p[k], L.g[k], L.m[k], L.v[k]}) &&
               (!has_low || reinterpret_cast<uintptr_t>(L.low[k]) % 8 == 0);
    L.first[k + 1] = L.first[k] + static_cast<int>(blocks);
  }
  flush();
}

}  // namespace elman::cuda
