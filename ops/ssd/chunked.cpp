#include "ops/ssd/chunked.h"

#include <limits>

#include "ops/ssd/reference.h"

namespace elman::ops {

std::vector<torch::Tensor> ssd_chunked(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
                                       const torch::Tensor& Bm, const torch::Tensor& Cm, const torch::Tensor& D,
                                       const torch::Tensor& h0, int64_t chunk) {
  check_ssd_args(x, dt, A, Bm, Cm, D, h0);
  TORCH_CHECK(chunk >= 1, "ssd_chunked: the chunk length must be at least 1, got ", chunk);
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), P = x.size(3), N = Bm.size(2), L = chunk;
  const int64_t nc = (T + L - 1) / L, pad = nc * L - T;
  const auto ct = x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  // Pad T up to nc * L with zeros: dt = 0 means no decay and x = 0 no write, so the state passes through.
  auto padT = [&](const torch::Tensor& t, int64_t trailing_dims) {
    std::vector<int64_t> spec(2 * trailing_dims, 0);
    spec.push_back(0), spec.push_back(pad);
    return pad ? torch::constant_pad_nd(t.to(ct), spec) : t.to(ct);
  };
  auto xr = padT(x, 2).reshape({B, nc, L, H, P});
  auto dtr = padT(dt, 1).reshape({B, nc, L, H});
  auto Br = padT(Bm, 1).reshape({B, nc, L, N}), Cr = padT(Cm, 1).reshape({B, nc, L, N});

  auto dA = (dtr * A.to(ct)).permute({0, 1, 3, 2});  // [B,nc,H,L] per-step log-decay dt_k A
  auto a = dA.cumsum(-1);                              // inclusive cumulative log-decay a_i
  // Segment sums seg[i][j] = sum_{j < k <= i} dt_k A, summed directly rather than as a_i - a_j (which loses
  // digits in fp32 when a is large and negative): keep dA_k in row k of column j where k > j, then cumsum rows.
  auto later = torch::ones({L, L}, x.options().dtype(torch::kBool)).tril(-1);
  auto seg = dA.unsqueeze(-1).expand({B, nc, H, L, L}).masked_fill(later.logical_not(), 0).cumsum(-2);
  auto xdt = (xr * dtr.unsqueeze(-1)).permute({0, 1, 3, 2, 4});  // [B,nc,H,L,P] dt_j x_j

  // Intra-chunk: (C_i . B_j) exp(a_i - a_j) for j <= i, applied to dt_j x_j.
  auto future = torch::ones({L, L}, x.options().dtype(torch::kBool)).triu(1);
  auto decay = torch::exp(seg.masked_fill(future, -std::numeric_limits<double>::infinity()));
  auto CB = torch::matmul(Cr, Br.transpose(-1, -2)).unsqueeze(2);  // [B,nc,1,L,L]
  auto y = torch::matmul(CB * decay, xdt);                          // [B,nc,H,L,P]

  // Each chunk's own contribution to the state at its end: [B,nc,H,P,N].
  auto a_last = a.narrow(-1, L - 1, 1);  // [B,nc,H,1]
  auto to_end = torch::exp(seg.select(-2, L - 1)).unsqueeze(-1);  // exp(a_{L-1} - a_j)
  auto S = torch::matmul((xdt * to_end).transpose(-1, -2), Br.unsqueeze(2));

  // State passing: the state entering each chunk.
  auto h = h0.defined() ? h0.to(ct) : torch::zeros({B, H, P, N}, x.options().dtype(ct));
  auto chunk_decay = torch::exp(a_last).unsqueeze(-1);  // [B,nc,H,1,1]
  std::vector<torch::Tensor> entering;
  entering.reserve(nc);
  for (int64_t c = 0; c < nc; ++c) {
    entering.push_back(h);
    h = chunk_decay.select(1, c) * h + S.select(1, c);
  }
  auto hs = torch::stack(entering, 1);  // [B,nc,H,P,N]

  // Inter-chunk: exp(a_i) h_c C_i.
  y = y + torch::matmul(Cr.unsqueeze(2), hs.transpose(-1, -2)) * torch::exp(a).unsqueeze(-1);
  y = y.permute({0, 1, 3, 2, 4}).reshape({B, nc * L, H, P}).narrow(1, 0, T);
  y = y + D.to(ct).view({1, 1, H, 1}) * x.to(ct);
  return {y.to(x.scalar_type()), h};
}

}  // namespace elman::ops
