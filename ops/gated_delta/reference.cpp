#include "ops/gated_delta/reference.h"

namespace elman::ops {

void check_gated_delta_args(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                            const torch::Tensor& g, const torch::Tensor& beta, const torch::Tensor& h0) {
  TORCH_CHECK(q.defined() && q.dim() == 4 && q.is_floating_point(), "gated_delta: q must be a float [B,T,H,K]");
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3);
  TORCH_CHECK(B >= 1 && T >= 1 && H >= 1 && K >= 1, "gated_delta: empty input, q is ", q.sizes());
  TORCH_CHECK(k.defined() && k.sizes() == q.sizes() && k.is_floating_point(), "gated_delta: k must be a float [", B,
              ",", T, ",", H, ",", K, "] like q, got ", k.sizes());
  TORCH_CHECK(v.defined() && v.dim() == 4 && v.size(0) == B && v.size(1) == T && v.size(2) == H && v.size(3) >= 1 &&
                  v.is_floating_point(),
              "gated_delta: v must be a float [", B, ",", T, ",", H, ",V], got ", v.sizes());
  const int64_t V = v.size(3);
  auto check_per_step = [&](const torch::Tensor& t, const char* name) {
    TORCH_CHECK(t.defined() && t.dim() == 3 && t.size(0) == B && t.size(1) == T && t.size(2) == H &&
                    t.is_floating_point(),
                "gated_delta: ", name, " must be a float [", B, ",", T, ",", H, "], got ",
                t.defined() ? t.sizes() : torch::IntArrayRef{});
  };
  check_per_step(g, "g");
  check_per_step(beta, "beta");
  if (h0.defined())
    TORCH_CHECK(h0.dim() == 4 && h0.size(0) == B && h0.size(1) == H && h0.size(2) == K && h0.size(3) == V &&
                    h0.is_floating_point(),
                "gated_delta: h0 must be a float [", B, ",", H, ",", K, ",", V, "], got ", h0.sizes());
}

std::vector<torch::Tensor> gated_delta_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                                 const torch::Tensor& g, const torch::Tensor& beta,
                                                 const torch::Tensor& h0) {
  check_gated_delta_args(q, k, v, g, beta, h0);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3);
  const auto ct = q.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto qc = q.to(ct), kc = k.to(ct), vc = v.to(ct), gc = g.to(ct), bc = beta.to(ct);
  auto S = h0.defined() ? h0.to(ct) : torch::zeros({B, H, K, V}, q.options().dtype(ct));
  std::vector<torch::Tensor> os;
  os.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    auto kt = kc.select(1, t);                                                   // [B,H,K]
    S = torch::exp(gc.select(1, t)).view({B, H, 1, 1}) * S;                      // decay
    auto pred = torch::matmul(kt.unsqueeze(-2), S).squeeze(-2);                 // S^T k  [B,H,V]
    auto u = bc.select(1, t).unsqueeze(-1) * (vc.select(1, t) - pred);          // [B,H,V]
    S = S + kt.unsqueeze(-1) * u.unsqueeze(-2);                                  // + k u^T
    os.push_back(torch::matmul(qc.select(1, t).unsqueeze(-2), S).squeeze(-2));  // S^T q  [B,H,V]
  }
  return {torch::stack(os, 1).to(v.scalar_type()), S};
}

}  // namespace elman::ops
