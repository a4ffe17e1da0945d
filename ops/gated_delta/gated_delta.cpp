#include "ops/gated_delta/gated_delta.h"

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

// The chunk preparation (cuda/gated_delta/gated_delta_prep_*.cu): q, k, v (any strides), g, beta -> W, Ut, Qg, Kl,
// P, decay (fp32, [B,nc,H,L,*]), with the hand-written backward. Saves the inputs and T = (I + A)^{-1} (in the
// operand type `op`).
struct GatedDeltaPrepFunction : public torch::autograd::Function<GatedDeltaPrepFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& g, const torch::Tensor& beta, int64_t op) {
    const auto gf = g.to(torch::kFloat).contiguous(), bf = beta.to(torch::kFloat).contiguous();
    auto r = cuda::gated_delta_prep_fwd(q, k, v, gf, bf, static_cast<at::ScalarType>(op) == torch::kBFloat16);
    ctx->save_for_backward({q, k, v, gf, bf, r[6]});
    ctx->saved_data["g_dtype"] = static_cast<int64_t>(g.scalar_type());
    ctx->saved_data["beta_dtype"] = static_cast<int64_t>(beta.scalar_type());
    return {r[0], r[1], r[2], r[3], r[4], r[5]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    for (auto& gr : grads) gr = gr.to(torch::kFloat).contiguous();  // an unused output's gradient arrives as zeros
    auto d = cuda::gated_delta_prep_bwd(s[0], s[1], s[2], s[3], s[4], s[5], grads[0], grads[1], grads[2], grads[3],
                                        grads[4], grads[5]);  // {dq, dk, dv, dg, dbeta}
    return {d[0], d[1], d[2], d[3].to(static_cast<at::ScalarType>(ctx->saved_data["g_dtype"].toInt())),
            d[4].to(static_cast<at::ScalarType>(ctx->saved_data["beta_dtype"].toInt())), torch::Tensor()};
  }
};

// The state pass over the chunks (cuda/gated_delta): U = Ut - W S, O = Qg S + P U, S <- decay S + Kl^T U, with a
// hand-written backward; its inputs come from GatedDeltaPrepFunction.
struct GatedDeltaStateFunction : public torch::autograd::Function<GatedDeltaStateFunction> {
  // W, Ut, Qg, Kl, P in any float dtype (converted to `op`, the kernels' operand type); decay, h0 fp32.
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& W, const torch::Tensor& Ut,
                               const torch::Tensor& Qg, const torch::Tensor& Kl, const torch::Tensor& P,
                               const torch::Tensor& decay, const torch::Tensor& h0, int64_t op) {
    const auto dt = static_cast<at::ScalarType>(op);
    auto cast = [&](const torch::Tensor& t) { return t.to(dt).contiguous(); };
    auto w = cast(W), ut = cast(Ut), qg = cast(Qg), kl = cast(Kl), pm = cast(P);
    auto dec = decay.to(torch::kFloat).contiguous();
    auto out = cuda::gated_delta_state_fwd(w, ut, qg, kl, pm, dec, h0.to(torch::kFloat).contiguous());
    ctx->save_for_backward({w, ut, qg, kl, pm, dec, out[2]});
    ctx->saved_data["in_dtypes"] = std::vector<int64_t>{
        static_cast<int64_t>(W.scalar_type()),  static_cast<int64_t>(Ut.scalar_type()),
        static_cast<int64_t>(Qg.scalar_type()), static_cast<int64_t>(Kl.scalar_type()),
        static_cast<int64_t>(P.scalar_type()),  static_cast<int64_t>(decay.scalar_type()),
        static_cast<int64_t>(h0.scalar_type())};
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined: read as zero
    return {out[0], out[1]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto& W = s[0];
    const auto op = W.scalar_type();
    const int64_t B = W.size(0), H = W.size(2), K = W.size(4), V = s[1].size(4);
    auto dO = grads[0].defined() ? grads[0].to(op).contiguous() : torch::zeros_like(s[1]);
    auto dS_T = grads[1].defined() ? grads[1].to(torch::kFloat).contiguous()
                                   : torch::zeros({B, H, K, V}, W.options().dtype(torch::kFloat));
    auto g = cuda::gated_delta_state_bwd(s[0], s[1], s[2], s[3], s[4], s[5], s[6], dO, dS_T);
    const auto dtypes = ctx->saved_data["in_dtypes"].toIntVector();
    variable_list r;
    for (int i = 0; i < 7; ++i) r.push_back(g[i].to(static_cast<at::ScalarType>(dtypes[i])));
    r.push_back(torch::Tensor());
    return r;
  }
};

std::vector<torch::Tensor> gated_delta_kernel(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                              const torch::Tensor& g, const torch::Tensor& beta,
                                              const torch::Tensor& h0) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3), L = kGatedDeltaChunk;
  const int64_t op = operand_type(q, k, v);
  const auto c = GatedDeltaPrepFunction::apply(q, k, v, g, beta, op);  // {W, Ut, Qg, Kl, P, decay}
  const auto S0 = h0.defined() ? h0 : torch::zeros({B, H, K, V}, q.options().dtype(torch::kFloat));
  auto out = GatedDeltaStateFunction::apply(c[0], c[1], c[2], c[3], c[4], c[5], S0, op);
  const int64_t nc = c[0].size(1);
  auto o = out[0].permute({0, 1, 3, 2, 4}).reshape({B, nc * L, H, V}).narrow(1, 0, T);
  return {o.to(v.scalar_type()), out[1]};
}
}  // namespace
#endif

std::vector<torch::Tensor> gated_delta(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const torch::Tensor& g, const torch::Tensor& beta, const torch::Tensor& h0,
                                       Impl impl) {
  check_gated_delta_args(q, k, v, g, beta, h0);
  if (impl == Impl::Reference) return gated_delta_reference(q, k, v, g, beta, h0);
  if (impl == Impl::Chunked) return gated_delta_chunked(q, k, v, g, beta, h0, kGatedDeltaChunk);
  check_kernel_args(q, k, v, g, beta, h0);
#ifdef ELMAN_WITH_CUDA
  return gated_delta_kernel(q, k, v, g, beta, h0);
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
