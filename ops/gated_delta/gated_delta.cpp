#include "ops/gated_delta/gated_delta.h"

#include <cmath>

#ifdef ELMAN_WITH_CUDA
#include "cuda/gated_delta/gated_delta.h"
#include "cuda/gated_delta/gated_delta_prep.h"
#endif

namespace elman::ops {

namespace {
// Impl::Kernel's limits (K 128, V a multiple of 64, float32 or bfloat16, CUDA inputs), as one-line errors that name
// the way out; after check_gated_delta_args.
void check_kernel_args(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& g,
                       const torch::Tensor& beta, const torch::Tensor& h0) {
  TORCH_CHECK(q.size(3) == 128 && v.size(3) % 64 == 0, "gated_delta: the CUDA kernel supports key head dim 128 and "
              "value head dim a multiple of 64, got K ", q.size(3), ", V ", v.size(3), "; use --impl chunked");
  TORCH_CHECK(q.scalar_type() != torch::kDouble && k.scalar_type() != torch::kDouble &&
                  v.scalar_type() != torch::kDouble,
              "gated_delta: the CUDA kernel takes float32 or bfloat16; use --impl chunked for float64");
  check_kernel_runs("gated_delta", q);
  TORCH_CHECK(k.is_cuda() && v.is_cuda() && g.is_cuda() && beta.is_cuda() && (!h0.defined() || h0.is_cuda()),
              "gated_delta: the CUDA kernel needs every input on the GPU");
}
}  // namespace

#ifdef ELMAN_WITH_CUDA
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The products' operand type of the kernels: bf16 (tensor cores) when any of q, k, v is bf16, as under autocast.
int64_t operand_type(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const bool bf16 = q.scalar_type() == torch::kBFloat16 || k.scalar_type() == torch::kBFloat16 ||
                    v.scalar_type() == torch::kBFloat16;
  return static_cast<int64_t>(bf16 ? torch::kBFloat16 : torch::kFloat);
}

// g, beta as the kernels read them (fp32, contiguous).
torch::Tensor f32c(const torch::Tensor& t) { return t.to(torch::kFloat).contiguous(); }

// dq, dk, dv, dg, dbeta from the preparation's backward (inputs q, k, v, g, beta, T saved by the forward; the
// gradients of W, Ut, Qg, Kl, P, decay in fp32), dg and dbeta in g's and beta's dtypes.
variable_list prep_backward(AutogradContext* ctx, const variable_list& s, const std::vector<torch::Tensor>& d6) {
  auto d = cuda::gated_delta_prep_bwd(s[0], s[1], s[2], s[3], s[4], s[5], d6[0], d6[1], d6[2], d6[3], d6[4], d6[5],
                                      ctx->saved_data["qk_l2norm"].toBool());
  return {d[0], d[1], d[2], d[3].to(static_cast<at::ScalarType>(ctx->saved_data["g_dtype"].toInt())),
          d[4].to(static_cast<at::ScalarType>(ctx->saved_data["beta_dtype"].toInt()))};
}

void save_options(AutogradContext* ctx, const torch::Tensor& g, const torch::Tensor& beta, bool qk_l2norm) {
  ctx->saved_data["g_dtype"] = static_cast<int64_t>(g.scalar_type());
  ctx->saved_data["beta_dtype"] = static_cast<int64_t>(beta.scalar_type());
  ctx->saved_data["qk_l2norm"] = qk_l2norm;
}

// The chunk preparation alone (cuda/gated_delta/gated_delta_prep_*.cu), for ops::gated_delta_chunk_prep_kernel:
// q, k, v (any strides), g, beta -> W, Ut, Qg, Kl, P (the operand type `op`), decay (fp32), [B,nc,H,L,*], with the
// hand-written backward. Saves the inputs and T = (I + A)^{-1}.
struct GatedDeltaPrepFunction : public torch::autograd::Function<GatedDeltaPrepFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& g, const torch::Tensor& beta, int64_t op) {
    const auto gf = f32c(g), bf = f32c(beta);
    auto r = cuda::gated_delta_prep_fwd(q, k, v, gf, bf, static_cast<at::ScalarType>(op) == torch::kBFloat16, false);
    ctx->save_for_backward({q, k, v, gf, bf, r[6]});
    save_options(ctx, g, beta, false);
    return {r[0], r[1], r[2], r[3], r[4], r[5]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    for (auto& gr : grads) gr = f32c(gr);  // an unused output's gradient arrives as zeros
    auto r = prep_backward(ctx, ctx->get_saved_variables(), grads);
    r.push_back(torch::Tensor());
    return r;
  }
};

// The whole kernel path as one Function: the preparation, then the state pass over the chunks (cuda/gated_delta:
// U = Ut - W S, S <- decay S + Kl^T U) and the outputs O = Qg S + P U; backward: the state pass in reverse and the
// chunks' shares, then the preparation's backward. The chunk quantities stay in the operand type between the two
// (what the state pass multiplies, rounded once by the preparation) and their gradients stay fp32, with no cast in
// between.
// q, k, v, g, beta as gated_delta takes them, h0 [B,H,K,V] fp32 -> O [B, nc L, H, V] (operand type), S_T (fp32);
// with qk_l2norm the preparation L2-normalises q and k itself (forward and backward).
struct GatedDeltaFunction : public torch::autograd::Function<GatedDeltaFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& g, const torch::Tensor& beta,
                               const torch::Tensor& h0, int64_t op, bool qk_l2norm) {
    const auto gf = f32c(g), bf = f32c(beta);
    auto c = cuda::gated_delta_prep_fwd(q, k, v, gf, bf, static_cast<at::ScalarType>(op) == torch::kBFloat16,
                                        qk_l2norm);
    auto out = cuda::gated_delta_state_fwd(c[0], c[1], c[2], c[3], c[4], c[5], f32c(h0));
    // q, k, v, g, beta, T for the preparation; W, Qg, Kl, P, decay, U and the entering states (fp32 and operand
    // copy) for the state pass.
    ctx->save_for_backward({q, k, v, gf, bf, c[6], c[0], c[2], c[3], c[4], c[5], out[3], out[2], out[4]});
    save_options(ctx, g, beta, qk_l2norm);
    ctx->saved_data["h0_dtype"] = static_cast<int64_t>(h0.scalar_type());
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined: read as zero
    return {out[0], out[1]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto& W = s[6];
    const int64_t B = W.size(0), nc = W.size(1), H = W.size(2), K = W.size(4), V = s[11].size(4);
    auto dO = grads[0].defined() ? grads[0].to(W.scalar_type()).contiguous()
                                 : torch::zeros({B, nc * kGatedDeltaChunk, H, V}, W.options());
    auto dS_T = grads[1].defined() ? f32c(grads[1]) : torch::zeros({B, H, K, V}, W.options().dtype(torch::kFloat));
    // {dW, dUt, dQg, dKl, dP, ddecay, dh0}, fp32
    auto d = cuda::gated_delta_state_bwd(s[6], s[7], s[8], s[9], s[10], s[11], s[12], s[13], dO, dS_T);
    auto r = prep_backward(ctx, s, {d[0], d[1], d[2], d[3], d[4], d[5]});
    r.push_back(d[6].to(static_cast<at::ScalarType>(ctx->saved_data["h0_dtype"].toInt())));
    r.push_back(torch::Tensor());
    r.push_back(torch::Tensor());
    return r;
  }
};

std::vector<torch::Tensor> gated_delta_kernel(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                              const torch::Tensor& g, const torch::Tensor& beta, const torch::Tensor& h0,
                                              bool qk_l2norm) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3);
  const auto S0 = h0.defined() ? h0 : torch::zeros({B, H, K, V}, q.options().dtype(torch::kFloat));
  auto out = GatedDeltaFunction::apply(q, k, v, g, beta, S0, operand_type(q, k, v), qk_l2norm);
  // O covers whole chunks; a narrow only when T is not a multiple of the chunk (its backward pads the gradient).
  auto o = out[0].size(1) == T ? out[0] : out[0].narrow(1, 0, T);
  return {o.to(v.scalar_type()), out[1]};
}
}  // namespace
#endif

torch::Tensor qk_l2norm_reference(const torch::Tensor& x, bool is_q) {
  const auto xf = x.scalar_type() == torch::kDouble ? x : x.to(torch::kFloat);
  auto r = torch::rsqrt(xf.square().sum(-1, true) + kQkL2NormEps);
  if (is_q) r = r / std::sqrt(static_cast<double>(x.size(-1)));
  return xf * r;
}

std::vector<torch::Tensor> gated_delta(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const torch::Tensor& g, const torch::Tensor& beta, const torch::Tensor& h0,
                                       Impl impl, bool qk_l2norm) {
  check_gated_delta_args(q, k, v, g, beta, h0);
  if (impl != Impl::Kernel && qk_l2norm) {
    return gated_delta(qk_l2norm_reference(q, true), qk_l2norm_reference(k, false), v, g, beta, h0, impl, false);
  }
  if (impl == Impl::Reference) return gated_delta_reference(q, k, v, g, beta, h0);
  if (impl == Impl::Chunked) return gated_delta_chunked(q, k, v, g, beta, h0, kGatedDeltaChunk);
  check_kernel_args(q, k, v, g, beta, h0);
#ifdef ELMAN_WITH_CUDA
  return gated_delta_kernel(q, k, v, g, beta, h0, qk_l2norm);
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

GatedDeltaChunks gated_delta_chunk_prep_kernel(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                               const torch::Tensor& g, const torch::Tensor& beta) {
  check_gated_delta_args(q, k, v, g, beta, torch::Tensor());
  check_kernel_args(q, k, v, g, beta, torch::Tensor());
#ifdef ELMAN_WITH_CUDA
  const auto c = GatedDeltaPrepFunction::apply(q, k, v, g, beta, operand_type(q, k, v));
  return {c[0], c[1], c[2], c[3], c[4], c[5]};
#else
  return {};  // unreachable: check_kernel_runs throws in a build without CUDA
#endif
}

}  // namespace elman::ops
