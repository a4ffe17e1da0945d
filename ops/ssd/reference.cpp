#include "ops/ssd/reference.h"

namespace elman::ops {

void check_ssd_args(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A, const torch::Tensor& Bm,
                    const torch::Tensor& Cm, const torch::Tensor& D, const torch::Tensor& h0) {
  TORCH_CHECK(x.defined() && x.dim() == 4 && x.is_floating_point(), "ssd: x must be a float [B,T,H,P]");
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), P = x.size(3);
  TORCH_CHECK(B >= 1 && T >= 1 && H >= 1 && P >= 1, "ssd: empty input, x is ", x.sizes());
  TORCH_CHECK(dt.defined() && dt.dim() == 3 && dt.size(0) == B && dt.size(1) == T && dt.size(2) == H &&
                  dt.is_floating_point(),
              "ssd: dt must be a float [", B, ",", T, ",", H, "], got ", dt.sizes());
  TORCH_CHECK(Bm.defined() && Bm.dim() == 3 && Bm.size(0) == B && Bm.size(1) == T && Bm.is_floating_point(),
              "ssd: B must be a float [", B, ",", T, ",N], got ", Bm.sizes());
  const int64_t N = Bm.size(2);
  TORCH_CHECK(N >= 1, "ssd: d_state must be at least 1");
  TORCH_CHECK(Cm.defined() && Cm.sizes() == Bm.sizes() && Cm.is_floating_point(), "ssd: C must be a float [", B,
              ",", T, ",", N, "] like B, got ", Cm.sizes());
  TORCH_CHECK(A.defined() && A.dim() == 1 && A.size(0) == H && A.is_floating_point(), "ssd: A must be a float [", H,
              "], got ", A.sizes());
  TORCH_CHECK(D.defined() && D.dim() == 1 && D.size(0) == H && D.is_floating_point(), "ssd: D must be a float [", H,
              "], got ", D.sizes());
  if (h0.defined())
    TORCH_CHECK(h0.dim() == 4 && h0.size(0) == B && h0.size(1) == H && h0.size(2) == P && h0.size(3) == N &&
                    h0.is_floating_point(),
                "ssd: h0 must be a float [", B, ",", H, ",", P, ",", N, "], got ", h0.sizes());
}

std::vector<torch::Tensor> ssd_reference(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
                                         const torch::Tensor& Bm, const torch::Tensor& Cm, const torch::Tensor& D,
                                         const torch::Tensor& h0) {
  check_ssd_args(x, dt, A, Bm, Cm, D, h0);
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), P = x.size(3), N = Bm.size(2);
  const auto ct = x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto xc = x.to(ct), dtc = dt.to(ct), Bc = Bm.to(ct), Cc = Cm.to(ct), Ac = A.to(ct), Dc = D.to(ct);
  auto h = h0.defined() ? h0.to(ct) : torch::zeros({B, H, P, N}, x.options().dtype(ct));
  std::vector<torch::Tensor> ys;
  ys.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    auto xt = xc.select(1, t), dtt = dtc.select(1, t);  // [B,H,P], [B,H]
    auto decay = torch::exp(dtt * Ac).view({B, H, 1, 1});
    auto write = (dtt.unsqueeze(-1) * xt).unsqueeze(-1) * Bc.select(1, t).view({B, 1, 1, N});  // [B,H,P,N]
    h = decay * h + write;
    auto yt = torch::matmul(h, Cc.select(1, t).view({B, 1, N, 1})).squeeze(-1);                // [B,H,P]
    ys.push_back(yt + Dc.view({1, H, 1}) * xt);
  }
  return {torch::stack(ys, 1).to(x.scalar_type()), h};
}

}  // namespace elman::ops
