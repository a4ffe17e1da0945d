/* Dense Elman recurrence, backward (full BPTT; recurrence, shapes and modes as in dense_elman_fwd.cu).
 *
 * One persistent cooperative launch walks t = T-1 .. 0 carrying the fp32 gradient reaching h_t from later
 * steps (carry_{T-1} = dh_T). With g_t = dh_t + carry_t (dh = gradient of the output h):
 *   Tanh:      dz_t = g_t (1 - h_t^2)                                        carry_{t-1} = W^T dz_t
 *   Linear:    dz_t = g_t                                                    carry_{t-1} = W^T dz_t
 *   GatedTanh: dapre_t = g_t (h_{t-1} - c_t) alpha_t (1 - alpha_t)
 *              dz_t = g_t (1 - alpha_t) (1 - c_t^2)                          carry_{t-1} = g_t alpha_t + W^T dz_t
 * dpre_t = dz_t; dh0 = carry_{-1}; dW = sum_t dz_t^T h_{t-1}: one GEMM after the kernel, in the inputs' dtype
 * with fp32 accumulation and an fp32 result, over the forward's output h shifted by one step behind h0.
 *
 * Shapes: W^T [D,D] pre's dtype (the launcher transposes and converts), apre [B,T,D] (GatedTanh), h0 [B,D] f32,
 *   h_hist, c_hist [B,T,D] f32 (saved by the forward), dh [B,T,D] (pre's dtype), dh_T [B,D] f32,
 *   dzbuf [2,B,Dp] pre's dtype (broadcast of dz_t), outputs dpre, dapre [B,T,D] (pre's dtype), dh0 [B,D] f32.
 * Work split: as the forward, G batch groups of ceil(D/R) blocks (dense_elman.cuh); in its group, block g owns
 * indices k in [g R, g R + R): rows of W^T (columns of W), held by the product (fp32 inputs: fp32 shared memory
 * and FMA; bf16 inputs: bf16 MMA fragments, R = 16, 32 or 48), and the pointwise work of those k for the group's
 * batch rows. A prologue computes dz_{T-1} for its k and writes it to dzbuf[(T-1)&1]; the group syncs; then step
 * t computes (W^T dz_t)[b,k] for its k and the group's b, adds the gate term g_t alpha_t kept in shared memory,
 * and, while t > 0, forms g_{t-1} and dz_{t-1}, writes dz_{t-1} to dzbuf[(t-1)&1], arrives at the group's
 * barrier, writes dpre and dapre, loads the next step's pointwise inputs (dh, h_hist, c_hist, apre) for its first
 * batch tile, and waits; at t = 0 it writes dh0. Those loads thus hide under the barrier (other tiles load theirs
 * before their product).
 * Numerics: the carried gradient, the pointwise math and the sums are fp32. dz_t is broadcast in pre's dtype:
 * for bf16 inputs W^T dz_t sees the bf16-rounded dz_t, which is the dpre the caller gets and the dz the dW
 * GEMM uses (bf16 x bf16 with fp32 accumulation, like a bf16-autocast matmul), so every consumer of dz_t sees
 * the same values, and the broadcast's L2 traffic is halved. fp32 inputs keep everything in fp32.
 * Preconditions: contiguous CUDA tensors; the same size limits as the forward.
 */
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common/cuda_check.h"
#include "cuda/dense_elman/dense_elman.cuh"
#include "cuda/dense_elman/dense_elman.h"
#include "ops/common/alloc.h"

namespace elman::cuda {
namespace {
using namespace dense;

template <typename scalar_t>
struct BwdParams {
  const scalar_t* WT;      // [D,D], WT[k][j] = W[j][k]
  const scalar_t* apre;    // [B,T,D] (GatedTanh) or nullptr
  const float* h0;         // [B,D]
  const float* h_hist;     // [B,T,D]
  const float* c_hist;     // [B,T,D] (GatedTanh) or nullptr
  const scalar_t* dh;      // [B,T,D] or nullptr (zero)
  const float* dh_T;       // [B,D] or nullptr (zero)
  scalar_t* dzbuf;         // [2,B,Dp]: step t reads dzbuf[t&1], writes dzbuf[(t-1)&1]; columns >= D stay zero
  scalar_t* dpre;          // [B,T,D]
  scalar_t* dapre;         // [B,T,D] (GatedTanh) or nullptr
  float* dh0;              // [B,D]
  unsigned* bar;           // [groups] barrier counters, zero at launch
  int B, T, D, Dp, mode, groups;
};

// What the pointwise step at time t needs for channel (b, k), loaded ahead of use.
struct PointIn {
  float dh = 0.f, h = 0.f, ap = 0.f, c = 0.f, hp = 0.f;
};

template <bool kGated, typename scalar_t>
__device__ __forceinline__ PointIn load_point(const BwdParams<scalar_t>& p, int b, int k, int t, int64_t o) {
  PointIn in;
  if (p.dh) in.dh = static_cast<float>(p.dh[o]);
  if (!kGated) {
    if (p.mode == kTanh) in.h = p.h_hist[o];
  } else {
    in.ap = static_cast<float>(p.apre[o]);
    in.c = p.c_hist[o];
    in.hp = t > 0 ? p.h_hist[o - p.D] : p.h0[static_cast<int64_t>(b) * p.D + k];
  }
  return in;
}

// The pointwise step at one channel: dz_t (and dapre_t) from g_t, and g_t alpha_t (GatedTanh; else 0), the part
// of carry_{t-1} that skips W.
struct PointOut {
  float dz = 0.f, da = 0.f, q = 0.f;
};

template <bool kGated, typename scalar_t>
__device__ __forceinline__ PointOut point_bwd(const BwdParams<scalar_t>& p, const PointIn& in, float g) {
  PointOut out;
  if (!kGated) {
    out.dz = p.mode == kTanh ? g * (1.f - in.h * in.h) : g;
  } else {
    const float a = fast_sigmoid(in.ap);
    out.da = g * (in.hp - in.c) * a * (1.f - a);
    out.dz = g * (1.f - a) * (1.f - in.c * in.c);
    out.q = g * a;
  }
  return out;
}

// kGated: GatedTanh (else Tanh or Linear, told apart at run time): a template argument so that the pointwise
// inputs held across the product take only the registers the mode needs.
template <class Prod, bool kGated>
__global__ void __launch_bounds__(kThreads, 1) dense_elman_bwd_kernel(const BwdParams<typename Prod::scalar_t> p) {
  using scalar_t = typename Prod::scalar_t;
  constexpr int R = Prod::kRows;
  extern __shared__ float4 smem4[];
  const int per_group = (p.D + R - 1) / R, grp = blockIdx.x / per_group;
  const int k0 = (blockIdx.x - grp * per_group) * R;
  const BatchSlice bs(p.B, p.groups, grp);
  Prod prod(smem4, p.WT, k0, p.D, p.Dp);  // rows k0.. of W^T
  float* st = prod.end();                  // [B][R] g_t alpha_t of this block's indices (its group's b)

  const int bl = threadIdx.x / R, r = threadIdx.x - bl * R, k = k0 + r;
  const bool mine = threadIdx.x < R * Prod::kBTile && k < p.D;
  const int64_t BDp = static_cast<int64_t>(p.B) * p.Dp;
  const auto at = [&](int b, int t) { return (static_cast<int64_t>(b) * p.T + t) * p.D + k; };
  // publish: dz of channel (b, k) to the broadcast buffer (what the group waits for) and the gate term to st;
  // store: dpre and dapre at o, after the block has arrived at the barrier.
  const auto publish = [&](const PointOut& out, int b, scalar_t* dz_buf) {
    dz_buf[static_cast<int64_t>(b) * p.Dp + k] = static_cast<scalar_t>(out.dz);
    st[b * R + r] = out.q;
  };
  const auto store = [&](const PointOut& out, int64_t o) {
    p.dpre[o] = static_cast<scalar_t>(out.dz);
    if (kGated) p.dapre[o] = static_cast<scalar_t>(out.da);
  };
  unsigned syncs = 0;

  // Prologue: dz_{T-1} from g_{T-1} = dh_{T-1} + dh_T.
  for (int b = bs.beg + bl; mine && b < bs.end; b += Prod::kBTile) {
    const int64_t o = at(b, p.T - 1);
    const PointIn in = load_point<kGated>(p, b, k, p.T - 1, o);
    const PointOut out =
        point_bwd<kGated>(p, in, in.dh + (p.dh_T ? p.dh_T[static_cast<int64_t>(b) * p.D + k] : 0.f));
    publish(out, b, p.dzbuf + ((p.T - 1) & 1) * BDp);
    store(out, o);
  }
  // The pointwise inputs of channel (b, t-1, k) at step t, loaded before they are needed and consumed after the
  // product: those of a step's first tile one step ahead (their DRAM latency hides under the barrier), the
  // others at the start of their tile.
  PointIn in_first;
  const auto load_first = [&](int t) {
    const int b = bs.beg + bl;
    if (mine && t > 0 && b < bs.end) in_first = load_point<kGated>(p, b, k, t - 1, at(b, t - 1));
  };
  group_arrive(p.bar + grp);
  load_first(p.T - 1);
  group_wait(p.bar + grp, ++syncs * per_group);  // dz_{T-1} of the group's rows complete

  for (int t = p.T - 1; t >= 0; --t) {
    const scalar_t* din = p.dzbuf + (t & 1) * BDp;
    scalar_t* dout = p.dzbuf + ((t + 1) & 1) * BDp;  // holds dz_{t-1}
    for (int b0 = bs.beg; b0 < bs.end; b0 += Prod::kBTile) {
      const int b = b0 + bl;
      const bool act = mine && b < bs.end, last = b0 + Prod::kBTile >= bs.end;
      const int64_t o = at(b, t - 1);  // channel (b, t-1, k)
      PointIn in = in_first;
      if (b0 != bs.beg && act && t > 0) in = load_point<kGated>(p, b, k, t - 1, o);
      prod.tile(din, bs.end, b0);
      __syncthreads();
      PointOut out;
      if (act) {
        float carry = prod.result(bl, r);
        if (kGated) carry += st[b * R + r];
        if (t == 0) {
          p.dh0[static_cast<int64_t>(b) * p.D + k] = carry;
        } else {
          out = point_bwd<kGated>(p, in, in.dh + carry);
          publish(out, b, dout);
        }
      }
      // The step's last tile arrives at the group's barrier (dz_{t-1} of the group's rows complete in dzbuf)
      // before its output stores and the next step's loads; the other tiles only protect the product's buffers.
      if (!last) {
        __syncthreads();
      } else if (t > 0) {
        group_arrive(p.bar + grp);
      }
      if (act && t > 0) store(out, o);
      if (last && t > 0) {
        load_first(t - 1);
        group_wait(p.bar + grp, ++syncs * per_group);
      }
    }
  }
}

template <class Prod>
void consider_bwd(Pick& best, const BwdParams<typename Prod::scalar_t>& p) {
  if (!Prod::fits(p.Dp)) return;
  const void* kernel = p.mode == kGatedTanh ? reinterpret_cast<const void*>(&dense_elman_bwd_kernel<Prod, true>)
                                            : reinterpret_cast<const void*>(&dense_elman_bwd_kernel<Prod, false>);
  consider(best, kernel, Prod::kRows, p.D, p.B, smem_bytes<Prod>(p.Dp, p.B));
}

template <typename scalar_t, class... Prods>
Pick pick_bwd(const BwdParams<scalar_t>& p, ProductList<Prods...>) {
  Pick best;
  (consider_bwd<Prods>(best, p), ...);
  return best;
}

template <typename scalar_t>
void run_bwd(const at::Tensor& WT, const at::Tensor& apre, const at::Tensor& h0, const at::Tensor& h_hist,
             const at::Tensor& c_hist, const at::Tensor& dh, const at::Tensor& dh_T, at::Tensor& dpre,
             at::Tensor& dapre, at::Tensor& dh0, int mode) {
  const int64_t B = h_hist.size(0), T = h_hist.size(1), D = h_hist.size(2), Dp = padded_width(D);
  auto dzbuf = at::zeros({2, B, Dp}, dpre.options());
  BwdParams<scalar_t> p{WT.data_ptr<scalar_t>(),
                        apre.defined() ? apre.data_ptr<scalar_t>() : nullptr,
                        h0.data_ptr<float>(),
                        h_hist.data_ptr<float>(),
                        c_hist.defined() ? c_hist.data_ptr<float>() : nullptr,
                        dh.defined() ? dh.data_ptr<scalar_t>() : nullptr,
                        dh_T.defined() ? dh_T.data_ptr<float>() : nullptr,
                        dzbuf.data_ptr<scalar_t>(),
                        dpre.data_ptr<scalar_t>(),
                        dapre.defined() ? dapre.data_ptr<scalar_t>() : nullptr,
                        dh0.data_ptr<float>(),
                        nullptr,
                        static_cast<int>(B),
                        static_cast<int>(T),
                        static_cast<int>(D),
                        static_cast<int>(Dp),
                        mode,
                        0};
  const Pick pick = pick_bwd(p, Products<scalar_t>{});
  if (pick.groups == 0) fail_too_large("dense_elman_bwd", B, D);
  launch_groups(pick, p, dpre, at::cuda::getCurrentCUDAStream());
}

template <>
void run_bwd<double>(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                     const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&, int) {
  TORCH_CHECK(false, "dense_elman_bwd: float64 has no kernel; use the reference implementation");
}

}  // namespace

std::vector<at::Tensor> dense_elman_bwd(const at::Tensor& W_in, const at::Tensor& apre_in, const at::Tensor& h0_in,
                                        const at::Tensor& h_hist_in, const at::Tensor& c_hist_in,
                                        const at::Tensor& h_out, const at::Tensor& dh_in, const at::Tensor& dh_T_in,
                                        int64_t mode,
                                        at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "dense_elman_bwd: dtype must be float32 or bfloat16");
  TORCH_CHECK(mode >= kTanh && mode <= kGatedTanh, "dense_elman_bwd: unknown mode ", mode);
  const c10::cuda::CUDAGuard guard(h_hist_in.device());
  auto h_hist = h_hist_in.contiguous();
  TORCH_CHECK(h_hist.dim() == 3 && h_hist.scalar_type() == at::kFloat,
              "dense_elman_bwd: h_hist must be float32 [B,T,D]");
  const int64_t B = h_hist.size(0), T = h_hist.size(1), D = h_hist.size(2);
  auto f32 = h_hist.options();
  auto io = f32.dtype(dtype);
  auto W = W_in.to(f32);
  TORCH_CHECK(W.dim() == 2 && W.size(0) == D && W.size(1) == D, "dense_elman_bwd: W must be [D,D]");
  auto WT = W.t().to(dtype).contiguous();
  auto h0 = h0_in.to(f32).contiguous();
  TORCH_CHECK(h0.sizes() == at::IntArrayRef({B, D}), "dense_elman_bwd: h0 must be [B,D]");
  const bool gated = mode == kGatedTanh;
  at::Tensor apre, c_hist;
  if (gated) {
    TORCH_CHECK(apre_in.defined() && c_hist_in.defined(), "dense_elman_bwd: GatedTanh needs apre and c_hist");
    apre = apre_in.to(dtype).contiguous();
    c_hist = c_hist_in.to(at::kFloat).contiguous();
    TORCH_CHECK(apre.sizes() == h_hist.sizes() && c_hist.sizes() == h_hist.sizes(),
                "dense_elman_bwd: apre and c_hist must be [B,T,D]");
  }
  // Incoming gradients may be undefined (that output did not reach the loss) or non-contiguous.
  at::Tensor dh = dh_in.defined() ? dh_in.to(dtype).contiguous() : at::Tensor();
  at::Tensor dh_T = dh_T_in.defined() ? dh_T_in.to(at::kFloat).contiguous() : at::Tensor();
  if (dh.defined()) TORCH_CHECK(dh.sizes() == h_hist.sizes(), "dense_elman_bwd: dh must be [B,T,D]");
  if (dh_T.defined()) TORCH_CHECK(dh_T.sizes() == at::IntArrayRef({B, D}), "dense_elman_bwd: dh_T must be [B,D]");

  auto dpre = ops::empty_output({B, T, D}, io);
  at::Tensor dapre = gated ? ops::empty_output({B, T, D}, io) : at::Tensor();
  auto dh0 = ops::empty_output({B, D}, f32);
  ELMAN_DISPATCH_FLOAT_BF16(dtype, "dense_elman_bwd", [&] {
    run_bwd<scalar_t>(WT, apre, h0, h_hist, c_hist, dh, dh_T, dpre, dapre, dh0, static_cast<int>(mode));
  });
  // dW[j,k] = sum_{b,t} dz[b,t,j] h_{t-1}[b,k]: one GEMM over the B*T steps in the inputs' dtype (bf16: the
  // bf16 dz of the scan and the bf16-rounded states, which are the values of the output h), fp32 accumulation and
  // result. h_{t-1} is h shifted by one step behind h0, concatenated in the inputs' dtype.
  TORCH_CHECK(h_out.sizes() == h_hist.sizes() && h_out.scalar_type() == dtype,
              "dense_elman_bwd: h must be the forward's output [B,T,D] in dtype");
  auto h_prev = at::cat({h0.to(dtype).unsqueeze(1), h_out.narrow(1, 0, T - 1)}, 1);
  auto dW = ops::empty_output({D, D}, f32);
  if (dtype == at::kFloat) {
    at::mm_out(dW, dpre.view({B * T, D}).t(), h_prev.view({B * T, D}));
  } else {
    at::mm_out(dW, dpre.view({B * T, D}).t(), h_prev.view({B * T, D}), at::kFloat);
  }
  return {dpre, dW, dapre, dh0};
}

}  // namespace elman::cuda
