#include "ops/gated_delta/chunked.h"

#include <limits>

#include "ops/gated_delta/reference.h"

namespace elman::ops {

GatedDeltaChunks gated_delta_chunk_prep(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                        const torch::Tensor& g, const torch::Tensor& beta, int64_t chunk) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3), L = chunk;
  const int64_t nc = (T + L - 1) / L, pad = nc * L - T;
  const auto ct = q.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  // Pad T up to nc * L with zeros (g = 0: no decay; beta = 0, k = 0: no write), then lay chunks out as
  // [B,nc,H,L,...] so that every per-chunk product is a batched matmul.
  auto chunks = [&](const torch::Tensor& t) {
    const bool per_step = t.dim() == 3;  // g, beta [B,T,H]
    std::vector<int64_t> spec(per_step ? 2 : 4, 0);
    spec.push_back(0), spec.push_back(pad);
    auto p = pad ? torch::constant_pad_nd(t.to(ct), spec) : t.to(ct);
    return per_step ? p.reshape({B, nc, L, H}).permute({0, 1, 3, 2})
                    : p.reshape({B, nc, L, H, t.size(3)}).permute({0, 1, 3, 2, 4});
  };
  auto qc = chunks(q), kc = chunks(k), vc = chunks(v);  // [B,nc,H,L,K|V]
  auto gc = chunks(g), bc = chunks(beta);               // [B,nc,H,L]

  // Segment sums seg[i][j] = sum_{j < k <= i} g_k: keep g_k in row k of column j where k > j, then cumsum rows.
  auto later = torch::ones({L, L}, q.options().dtype(torch::kBool)).tril(-1);
  auto seg = gc.unsqueeze(-1).expand({B, nc, H, L, L}).masked_fill(later.logical_not(), 0).cumsum(-2);
  auto future = torch::ones({L, L}, q.options().dtype(torch::kBool)).triu(1);
  auto D = torch::exp(seg.masked_fill(future, -std::numeric_limits<double>::infinity()));  // [B,nc,H,L,L]
  auto gamma = torch::exp(gc.cumsum(-1));                                                 // exp(G_i) [B,nc,H,L]

  // The WY representation: (I + A) [W | U~] = [diag(beta exp(G)) K | diag(beta) V], A strictly lower.
  auto A = (torch::matmul(kc, kc.transpose(-1, -2)) * D * bc.unsqueeze(-1)).tril(-1);
  auto rhs = torch::cat({kc * (bc * gamma).unsqueeze(-1), vc * bc.unsqueeze(-1)}, -1);
  auto WU = torch::linalg_solve_triangular(A, rhs, /*upper=*/false, /*left=*/true, /*unitriangular=*/true);

  GatedDeltaChunks r;
  r.W = WU.narrow(-1, 0, K), r.Ut = WU.narrow(-1, K, V);
  r.P = torch::matmul(qc, kc.transpose(-1, -2)) * D;               // intra-chunk (Q K^T) o D
  r.Qg = qc * gamma.unsqueeze(-1);                                 // exp(G_i) q_i: reads the entering state
  r.Kl = kc * torch::exp(seg.select(-2, L - 1)).unsqueeze(-1);     // exp(G_{L-1} - G_j) k_j: writes the leaving one
  r.decay = gamma.select(-1, L - 1);                               // exp(G_{L-1}) [B,nc,H]
  return r;
}

std::vector<torch::Tensor> gated_delta_chunked(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                               const torch::Tensor& g, const torch::Tensor& beta,
                                               const torch::Tensor& h0, int64_t chunk) {
  check_gated_delta_args(q, k, v, g, beta, h0);
  TORCH_CHECK(chunk >= 1, "gated_delta_chunked: the chunk length must be at least 1, got ", chunk);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3), L = chunk;
  const int64_t nc = (T + L - 1) / L;
  const auto ct = q.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  const auto c = gated_delta_chunk_prep(q, k, v, g, beta, L);
  auto chunk_decay = c.decay.view({B, nc, H, 1, 1});

  auto S = h0.defined() ? h0.to(ct) : torch::zeros({B, H, K, V}, q.options().dtype(ct));
  std::vector<torch::Tensor> os;
  os.reserve(nc);
  for (int64_t i = 0; i < nc; ++i) {
    auto Uc = c.Ut.select(1, i) - torch::matmul(c.W.select(1, i), S);  // [B,H,L,V]
    os.push_back(torch::matmul(c.Qg.select(1, i), S) + torch::matmul(c.P.select(1, i), Uc));
    S = chunk_decay.select(1, i) * S + torch::matmul(c.Kl.select(1, i).transpose(-1, -2), Uc);
  }
  auto o = torch::stack(os, 1).permute({0, 1, 3, 2, 4}).reshape({B, nc * L, H, V}).narrow(1, 0, T);
  return {o.to(v.scalar_type()), S};
}

}  // namespace elman::ops
