/* Dense Elman recurrence, forward: one persistent cooperative launch walks all T.
 *
 *   z_t = pre_t + W h_{t-1}        (W h)[j] = sum_k W[j,k] h[k]
 *   Tanh: h_t = tanh(z_t)    Linear: h_t = z_t
 *   GatedTanh: alpha_t = sigmoid(apre_t), c_t = tanh(z_t), h_t = alpha_t h_{t-1} + (1 - alpha_t) c_t
 *
 * Shapes (rightmost fastest): B batch, T time, D state width, Dp = D rounded up to 16.
 *   pre, apre [B,T,D] (f32|bf16)  W [D,D] pre's dtype (converted by the launcher)  h0, h_T [B,D] fp32
 *   h [B,T,D] pre's dtype  h_hist, c_hist [B,T,D] fp32  hbuf [2,B,Dp] pre's dtype (broadcast copy of the state)
 * Work split (dense_elman.cuh): G batch groups of ceil(D/R) blocks; in its group, block g owns rows j in
 * [g R, g R + R) of W for the whole launch: fp32 inputs keep the rows in fp32 shared memory and use CUDA-core
 * FMA (R from {2,4,8,10,12,16}), bf16 inputs keep 16, 32 or 48 rows as bf16 MMA fragments (in registers; at
 * D > 1280 with 48 rows, one k-tile per warp in shared memory); the launcher takes the R that lets the most groups
 * be co-resident (one 512-thread block per SM; on an H100 (132 SMs) bf16 D=1280 gets R=48 and 4 groups of 27
 * blocks, D=1536 R=48 and 4 groups of 32; ELMAN_DENSE_ROWS forces R). Per step t every block reads h_{t-1} for its
 * group's batch rows from hbuf[(t+1)&1] (through L2), computes z for its rows and those b in tiles, applies the
 * mode and writes h_t to hbuf[t&1]; the last tile of the step then arrives at the group's barrier, writes h_t to
 * h, h_hist (and c_t to c_hist), loads the next step's pre (and apre) for its first tile, and waits.
 * The state of a block's own rows also lives in shared memory in fp32 (GatedTanh's blend uses it).
 * Saved for backward (by ops/dense_elman): h_hist, and c_hist for GatedTanh.
 * Numerics: the state, h_hist, h_T, the products' sums and the pointwise math are fp32. fp32 inputs: fp32 W
 * and an fp32 broadcast. bf16 inputs: W h_{t-1} is a bf16 x bf16 product with fp32 accumulation (W rounded
 * to bf16, the state broadcast as the bf16 values of the output h), as a bf16-autocast matmul would compute
 * it. tanh/sigmoid through __expf (about 1e-7 relative).
 * Preconditions: contiguous CUDA tensors; B*T*D < 2^62; D small enough that the fp32 row slices fit (about
 * D <= 16 x SM count); the device supports cooperative launches. hbuf: zeros with hbuf[1][:, :D] = h0.
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
struct FwdParams {
  const scalar_t* W;      // [D,D]
  const scalar_t* pre;    // [B,T,D]
  const scalar_t* apre;   // [B,T,D] (GatedTanh) or nullptr
  const float* h0;        // [B,D]
  scalar_t* hbuf;         // [2,B,Dp]: step t reads hbuf[(t+1)&1], writes hbuf[t&1]; columns >= D stay zero
  scalar_t* h;            // [B,T,D]
  float* h_hist;          // [B,T,D]
  float* c_hist;          // [B,T,D] (GatedTanh) or nullptr
  float* h_T;             // [B,D]
  unsigned* bar;          // [groups] barrier counters, zero at launch
  int B, T, D, Dp, mode, groups;
};

template <class Prod>
__global__ void __launch_bounds__(kThreads, 1) dense_elman_fwd_kernel(const FwdParams<typename Prod::scalar_t> p) {
  using scalar_t = typename Prod::scalar_t;
  constexpr int R = Prod::kRows;
  extern __shared__ float4 smem4[];
  const int per_group = (p.D + R - 1) / R, grp = blockIdx.x / per_group;
  const int j0 = (blockIdx.x - grp * per_group) * R;
  const BatchSlice bs(p.B, p.groups, grp);
  Prod prod(smem4, p.W, j0, p.D, p.Dp);  // rows j0.. of W
  float* st = prod.end();                 // [B][R] fp32 state h_{t-1} of this block's rows (its group's b)
  for (int i = bs.beg * R + threadIdx.x; i < bs.end * R; i += kThreads) {
    const int b = i / R, j = j0 + (i - b * R);
    st[i] = j < p.D ? p.h0[static_cast<int64_t>(b) * p.D + j] : 0.f;
  }
  __syncthreads();

  // Epilogue role: thread -> (batch row bl of the tile, row r); consecutive threads write consecutive j.
  const int bl = threadIdx.x / R, r = threadIdx.x - bl * R, j = j0 + r;
  const bool mine = threadIdx.x < R * Prod::kBTile && j < p.D;
  const bool gated = p.mode == kGatedTanh;
  const int64_t BDp = static_cast<int64_t>(p.B) * p.Dp;
  // The pointwise inputs of channel (b, t, j), loaded before they are needed and consumed after the product:
  // those of a step's first tile one step ahead (their DRAM latency hides under the barrier), the others at
  // the start of their tile.
  const auto at = [&](int b, int t) { return (static_cast<int64_t>(b) * p.T + t) * p.D + j; };
  const auto load_in = [&](int b, int t, float& x, float& ap) {
    if (!mine || b >= bs.end) return;
    const int64_t o = at(b, t);
    x = static_cast<float>(p.pre[o]);
    if (gated) ap = static_cast<float>(p.apre[o]);
  };
  float x_first = 0.f, ap_first = 0.f;
  load_in(bs.beg + bl, 0, x_first, ap_first);
  for (int t = 0; t < p.T; ++t) {
    const scalar_t* hin = p.hbuf + ((t + 1) & 1) * BDp;
    scalar_t* hout = p.hbuf + (t & 1) * BDp;
    for (int b0 = bs.beg; b0 < bs.end; b0 += Prod::kBTile) {
      const int b = b0 + bl;
      const bool act = mine && b < bs.end, last = b0 + Prod::kBTile >= bs.end;
      const int64_t o = at(b, t);
      float x = x_first, ap = ap_first;
      if (b0 != bs.beg) load_in(b, t, x, ap);
      prod.tile(hin, bs.end, b0);
      __syncthreads();
      float hn = 0.f, c = 0.f;
      if (act) {
        const float z = x + prod.result(bl, r);
        if (p.mode == kTanh) {
          hn = tanh_f(z);
        } else if (p.mode == kLinear) {
          hn = z;
        } else {
          const float a = fast_sigmoid(ap);
          c = tanh_f(z);
          hn = a * st[b * R + r] + (1.f - a) * c;
        }
        st[b * R + r] = hn;
        hout[static_cast<int64_t>(b) * p.Dp + j] = static_cast<scalar_t>(hn);  // what the group waits for
      }
      // The step's last tile arrives at the group's barrier (h_t of the group's rows complete in hbuf) before its
      // output stores and the next step's loads; the other tiles only protect the product's buffers.
      if (!last) {
        __syncthreads();
      } else if (t + 1 < p.T) {
        group_arrive(p.bar + grp);
      }
      if (act) {
        p.h[o] = static_cast<scalar_t>(hn);
        p.h_hist[o] = hn;
        if (gated) p.c_hist[o] = c;
        if (t == p.T - 1) p.h_T[static_cast<int64_t>(b) * p.D + j] = hn;
      }
      if (last && t + 1 < p.T) {
        load_in(bs.beg + bl, t + 1, x_first, ap_first);
        group_wait(p.bar + grp, static_cast<unsigned>(t + 1) * per_group);
      }
    }
  }
}

template <class Prod>
void consider_fwd(Pick& best, const FwdParams<typename Prod::scalar_t>& p) {
  if (Prod::fits(p.Dp))
    consider(best, reinterpret_cast<const void*>(&dense_elman_fwd_kernel<Prod>), Prod::kRows, p.D, p.B,
             smem_bytes<Prod>(p.Dp, p.B));
}

template <typename scalar_t, class... Prods>
Pick pick_fwd(const FwdParams<scalar_t>& p, ProductList<Prods...>) {
  Pick best;
  (consider_fwd<Prods>(best, p), ...);
  return best;
}

template <typename scalar_t>
void run_fwd(const at::Tensor& pre, const at::Tensor& W, const at::Tensor& apre, const at::Tensor& h0, at::Tensor& h,
             at::Tensor& h_hist, at::Tensor& c_hist, at::Tensor& h_T, int mode) {
  const int64_t B = pre.size(0), T = pre.size(1), D = pre.size(2), Dp = padded_width(D);
  auto hbuf = at::zeros({2, B, Dp}, pre.options());
  hbuf.select(0, 1).narrow(1, 0, D).copy_(h0);
  FwdParams<scalar_t> p{W.data_ptr<scalar_t>(),
                            pre.data_ptr<scalar_t>(),
                            apre.defined() ? apre.data_ptr<scalar_t>() : nullptr,
                            h0.data_ptr<float>(),
                            hbuf.data_ptr<scalar_t>(),
                            h.data_ptr<scalar_t>(),
                            h_hist.data_ptr<float>(),
                            c_hist.defined() ? c_hist.data_ptr<float>() : nullptr,
                            h_T.data_ptr<float>(),
                            nullptr,
                            static_cast<int>(B),
                            static_cast<int>(T),
                            static_cast<int>(D),
                            static_cast<int>(Dp),
                            mode,
                            0};
  const Pick pick = pick_fwd(p, Products<scalar_t>{});
  if (pick.groups == 0) fail_too_large("dense_elman_fwd", B, D);
  launch_groups(pick, p, pre, at::cuda::getCurrentCUDAStream());
}

template <>
void run_fwd<double>(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&,
                     at::Tensor&, at::Tensor&, at::Tensor&, int) {
  TORCH_CHECK(false, "dense_elman_fwd: float64 has no kernel; use the reference implementation");
}

}  // namespace

std::vector<at::Tensor> dense_elman_fwd(const at::Tensor& pre_in, const at::Tensor& W_in, const at::Tensor& apre_in,
                                        const at::Tensor& h0_in, int64_t mode) {
  TORCH_CHECK(pre_in.dim() == 3, "dense_elman_fwd: pre must be [B,T,D], got ", pre_in.sizes());
  ELMAN_CHECK_FLOAT_DTYPE(pre_in);
  TORCH_CHECK(mode >= kTanh && mode <= kGatedTanh, "dense_elman_fwd: unknown mode ", mode);
  const c10::cuda::CUDAGuard guard(pre_in.device());
  auto pre = pre_in.contiguous();
  const int64_t B = pre.size(0), T = pre.size(1), D = pre.size(2);
  TORCH_CHECK(B >= 1 && T >= 1 && D >= 1, "dense_elman_fwd: empty input ", pre.sizes());
  TORCH_CHECK(B * T * D < (int64_t(1) << 62) && B * padded_width(D) < (int64_t(1) << 31) && T < (int64_t(1) << 31),
              "dense_elman_fwd: input too large ", pre.sizes());
  auto f32 = pre.options().dtype(at::kFloat);
  TORCH_CHECK(W_in.dim() == 2 && W_in.size(0) == D && W_in.size(1) == D, "dense_elman_fwd: W must be [D,D] = [", D,
              ",", D, "], got ", W_in.sizes());
  auto W = W_in.to(pre.scalar_type()).contiguous();
  auto h0 = h0_in.to(f32).contiguous();
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == B && h0.size(1) == D, "dense_elman_fwd: h0 must be [B,D] = [", B, ",",
              D, "], got ", h0.sizes());
  const bool gated = mode == kGatedTanh;
  at::Tensor apre;
  if (gated) {
    TORCH_CHECK(apre_in.defined() && apre_in.sizes() == pre.sizes(), "dense_elman_fwd: GatedTanh needs apre [B,T,D]");
    apre = apre_in.to(pre.scalar_type()).contiguous();
    ELMAN_CHECK_CUDA_TENSOR(apre);
  }
  ELMAN_CHECK_CUDA_TENSOR(pre);
  ELMAN_CHECK_CUDA_TENSOR(W);
  ELMAN_CHECK_CUDA_TENSOR(h0);
  TORCH_CHECK(W.device() == pre.device() && h0.device() == pre.device(),
              "dense_elman_fwd: tensors on different devices");

  auto h = ops::empty_output({B, T, D}, pre.options());
  auto h_hist = ops::empty_output({B, T, D}, f32);
  auto h_T = ops::empty_output({B, D}, f32);
  at::Tensor c_hist = gated ? ops::empty_output({B, T, D}, f32) : at::Tensor();
  ELMAN_DISPATCH_FLOAT_BF16(pre.scalar_type(), "dense_elman_fwd", [&] {
    run_fwd<scalar_t>(pre, W, apre, h0, h, h_hist, c_hist, h_T, static_cast<int>(mode));
  });
  return {h, h_hist, h_T, c_hist};
}

}  // namespace elman::cuda
