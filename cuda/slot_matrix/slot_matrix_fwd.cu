/* Slot-matrix nonlinear cell (E63m), forward: one launch walks all T.
 *
 *   r = tanh(S k), v = tanh(W_r r + wx + b), alpha = sigmoid(wa + b_alpha),
 *   S_t = diag(alpha) S_{t-1} + diag(1 - alpha) v k^T, y_t = tanh(S_t q)
 *
 * Grid: one block per batch element; the thread layout, the staging of proj rows (cp.async into a shared-memory
 * ring), the per-step block reduction and the step walk are in slot_matrix.cuh. Per step and thread: N C FMAs for the update and 2 N C for the partial sums of S_t q_t and
 * S_t k_{t+1}, a reduce-scatter of 2 NP values (16 shuffles at N = 8), one __syncthreads, nw shared loads on
 * 2 NP lanes, then on lane i of every warp: tanh(r_i), N shuffles + FMAs for (W_r r)_i, tanh, sigmoid, and 2 N
 * shuffles to broadcast v and alpha. The state at the start of every 16-step segment goes to ckpt (fp32).
 * Saved for backward (by ops/slot_matrix): ckpt.
 * Numerics: fp32 state and arithmetic, precise expf/tanhf; proj and y in float32 or bfloat16.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/slot_matrix/slot_matrix.cuh"
#include "cuda/slot_matrix/slot_matrix.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
using namespace slots;

template <int N, int C, typename scalar_t>
__global__ void __launch_bounds__(kThreads) slot_matrix_fwd_kernel(const Params<scalar_t> p) {
  __shared__ Common<N> sm;
  extern __shared__ float4 ring_mem[];
  scalar_t* ring = reinterpret_cast<scalar_t*>(ring_mem);
  const int b = blockIdx.x;
  load_common<N>(sm, p.W_r, p.b, p.b_alpha);  // visible after walk_forward's first barrier
  float S[N][C];
  load_state<N, C>(p.S0 + static_cast<int64_t>(b) * N * p.D, p.D, S);
  int buf = 0;
  walk_forward<N, C, scalar_t>(p, sm, ring, nullptr, b, 0, p.T, S, buf);
  store_state<N, C>(p.S_T + static_cast<int64_t>(b) * N * p.D, p.D, S);
}

template <typename scalar_t>
void launch_fwd(Params<scalar_t> p, int64_t slots) {
  dispatch_layout(slots, p.D, [&](auto n, auto c) {
    constexpr int N = decltype(n)::value, C = decltype(c)::value;
    auto kernel = slot_matrix_fwd_kernel<N, C, scalar_t>;
    const auto l = plan_launch(kernel, p.D, 2 * int64_t(p.D) + 2 * N, sizeof(scalar_t));
    p.pitch = l.pitch;
    kernel<<<p.B, l.threads, l.smem, at::cuda::getCurrentCUDAStream()>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

std::vector<at::Tensor> slot_matrix_fwd(const at::Tensor& proj_in, const at::Tensor& W_r_in, const at::Tensor& b_in,
                                        const at::Tensor& b_alpha_in, const at::Tensor& S0_in, int64_t slots) {
  TORCH_CHECK(proj_in.dim() == 3, "slot_matrix_fwd: proj must be [B,T,2D+2N], got ", proj_in.sizes());
  TORCH_CHECK(proj_in.scalar_type() == at::kFloat || proj_in.scalar_type() == at::kBFloat16,
              "slot_matrix: the CUDA kernel takes float32 or bfloat16 proj, got ", proj_in.scalar_type(),
              "; use the reference implementation for other dtypes");
  const c10::cuda::CUDAGuard guard(proj_in.device());
  auto proj = proj_in.contiguous();
  if (reinterpret_cast<uintptr_t>(proj.data_ptr()) % 4 != 0) proj = proj.clone();  // cp.async needs 4-byte alignment
  const int64_t B = proj.size(0), T = proj.size(1), N = slots, D = (proj.size(2) - 2 * N) / 2;
  TORCH_CHECK(D >= 1 && proj.size(2) == 2 * D + 2 * N, "slot_matrix_fwd: proj must be [B,T,2D+2N], got ",
              proj.sizes());
  TORCH_CHECK(B < (int64_t(1) << 31) && T < (int64_t(1) << 30) && D < (int64_t(1) << 30),
              "slot_matrix_fwd: input too large ", proj.sizes());
  auto f32 = proj.options().dtype(at::kFloat);
  auto W_r = W_r_in.to(f32).contiguous(), b = b_in.to(f32).contiguous(), b_alpha = b_alpha_in.to(f32).contiguous();
  auto S0 = S0_in.to(f32).contiguous();
  TORCH_CHECK(S0.sizes() == at::IntArrayRef({B, N, D}), "slot_matrix_fwd: S0 must be [B,N,D], got ", S0.sizes());
  TORCH_CHECK(W_r.sizes() == at::IntArrayRef({N, N}) && b.numel() == N && b_alpha.numel() == N,
              "slot_matrix_fwd: W_r must be [N,N], b and b_alpha [N]");
  ELMAN_CHECK_CUDA_TENSOR(proj);
  ELMAN_CHECK_CUDA_TENSOR(S0);
  ELMAN_CHECK_CUDA_TENSOR(W_r);
  const int64_t nseg = (T + kSegment - 1) / kSegment;

  auto y = ops::empty_output({B, T, N}, proj.options());
  auto S_T = ops::empty_output({B, N, D}, f32);
  auto ckpt = ops::empty_output({B, nseg, N, D}, f32);
  auto run = [&](auto tag) {
    using scalar_t = decltype(tag);
    Params<scalar_t> p{};
    p.proj = proj.data_ptr<scalar_t>();
    p.W_r = W_r.data_ptr<float>(), p.b = b.data_ptr<float>(), p.b_alpha = b_alpha.data_ptr<float>();
    p.S0 = S0.data_ptr<float>();
    p.ckpt = ckpt.data_ptr<float>();
    p.y = y.data_ptr<scalar_t>();
    p.S_T = S_T.data_ptr<float>();
    p.B = int(B), p.T = int(T), p.D = int(D), p.nseg = int(nseg);
    p.vec16 = (2 * D + 2 * N) * sizeof(scalar_t) % 16 == 0 && reinterpret_cast<uintptr_t>(p.proj) % 16 == 0;
    launch_fwd(p, N);
  };
  if (proj.scalar_type() == at::kBFloat16) run(c10::BFloat16{});
  else run(float{});
  return {y, S_T, ckpt};
}

}  // namespace elman::cuda
