#include "ops/sparse_block/reference.h"

#include <limits>

namespace elman::ops {

void check_sparse_block_args(const torch::Tensor& proj, const torch::Tensor& b_beta, const torch::Tensor& S0,
                             int64_t blocks, int64_t top_k, int64_t n_state) {
  TORCH_CHECK(blocks >= 1 && blocks <= kSparseBlockMaxBlocks, "sparse_block: blocks ", blocks,
              " is not supported; use --blocks from 1 to ", kSparseBlockMaxBlocks);
  TORCH_CHECK(top_k >= 1 && top_k <= blocks, "sparse_block: top_k ", top_k, " is not supported with ", blocks,
              " blocks; use --topk from 1 to the block count ", blocks);
  TORCH_CHECK(n_state >= 1 && n_state <= kSparseBlockMaxNState, "sparse_block: n_state ", n_state,
              " is not supported; use an n_state from 1 to ", kSparseBlockMaxNState, " (--nstate)");
  const int64_t width = blocks * 3 * n_state + n_state + blocks;
  TORCH_CHECK(proj.defined() && proj.dim() == 3, "sparse_block: proj must be [B,T,", width, "]");
  TORCH_CHECK(proj.is_floating_point(), "sparse_block: proj must be floating point, got ", proj.scalar_type());
  TORCH_CHECK(proj.size(0) >= 1 && proj.size(1) >= 1, "sparse_block: empty input, proj is ", proj.sizes());
  TORCH_CHECK(proj.size(2) == width, "sparse_block: proj must be [B,T,", width, "] (blocks ", blocks,
              " x 3 projections x n_state ", n_state, " + q ", n_state, " + router ", blocks, "), got ",
              proj.sizes());
  TORCH_CHECK(b_beta.defined() && b_beta.dim() == 2 && b_beta.size(0) == blocks && b_beta.size(1) == n_state &&
                  b_beta.is_floating_point(),
              "sparse_block: b_beta must be a float [", blocks, ",", n_state, "], got ",
              b_beta.defined() ? b_beta.sizes() : torch::IntArrayRef{});
  if (S0.defined())
    TORCH_CHECK(S0.dim() == 4 && S0.size(0) == proj.size(0) && S0.size(1) == blocks && S0.size(2) == n_state &&
                    S0.size(3) == n_state && S0.is_floating_point(),
                "sparse_block: S0 must be a float [", proj.size(0), ",", blocks, ",", n_state, ",", n_state,
                "], got ", S0.sizes());
}

std::vector<torch::Tensor> sparse_block_routing(const torch::Tensor& logits, int64_t top_k) {
  const int64_t nb = logits.size(-1);
  torch::Tensor selected;
  {
    torch::NoGradGuard no_grad;  // the selection is constant in backward
    auto l = logits.detach();
    auto mine = l.unsqueeze(-1), other = l.unsqueeze(-2);  // [.., j, 1] against [.., 1, i]
    auto idx = torch::arange(nb, l.options().dtype(torch::kLong));
    auto lower = idx.unsqueeze(0) < idx.unsqueeze(1);  // lower[j][i] = i < j
    auto ahead = (other > mine).logical_or((other == mine).logical_and(lower));   // block i ranks before j
    selected = ahead.sum(-1) < top_k;
  }
  auto w = torch::softmax(logits.masked_fill(selected.logical_not(), -std::numeric_limits<double>::infinity()), -1);
  return {torch::softmax(logits, -1), w};
}

std::vector<torch::Tensor> sparse_block_scan_reference(const torch::Tensor& scan_proj, const torch::Tensor& b_beta,
                                                       const torch::Tensor& w, const torch::Tensor& S0,
                                                       int64_t blocks, int64_t n_state) {
  const int64_t B = scan_proj.size(0), T = scan_proj.size(1), nb = blocks, n = n_state;
  const auto ct = scan_proj.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto p = scan_proj.to(ct).view({B, T, nb, 4, n});
  auto beta = torch::sigmoid(p.select(3, 3) + b_beta.to(ct));  // [B,T,nb,n]
  auto wc = w.to(ct);
  auto S = S0.to(ct);
  std::vector<torch::Tensor> ys;
  ys.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    auto pt = p.select(1, t);  // [B,nb,4,n]
    auto k = pt.select(2, 0), v = pt.select(2, 1), q = pt.select(2, 2);
    auto kh = k / (torch::linalg_vector_norm(k, 2, {-1}, /*keepdim=*/true) + 1e-6);
    auto r = torch::matmul(S, kh.unsqueeze(-1)).squeeze(-1);  // [B,nb,n]
    auto P = torch::tanh(S * beta.select(1, t).unsqueeze(-1) + (v - r).unsqueeze(-1) * kh.unsqueeze(-2));
    auto wt = wc.select(1, t).unsqueeze(-1).unsqueeze(-1);  // [B,nb,1,1]
    S = (1 - wt) * S + wt * P;
    auto u = torch::matmul(S, q.unsqueeze(-1)).squeeze(-1);
    ys.push_back((u * u * torch::sigmoid(u)).reshape({B, nb * n}));
  }
  return {torch::stack(ys, 1).to(scan_proj.scalar_type()), S};
}

std::vector<torch::Tensor> sparse_block_compose(const torch::Tensor& proj, const torch::Tensor& b_beta,
                                                const torch::Tensor& S0, int64_t blocks, int64_t top_k,
                                                int64_t n_state, const SparseBlockScan& scan) {
  const int64_t B = proj.size(0), T = proj.size(1), nb = blocks, n = n_state;
  const auto ct = proj.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto kvb = proj.narrow(2, 0, nb * 3 * n).view({B, T, nb, 3, n});
  auto q = proj.narrow(2, nb * 3 * n, n).view({B, T, 1, 1, n}).expand({B, T, nb, 1, n});
  auto scan_proj = torch::cat({kvb.narrow(3, 0, 2), q, kvb.narrow(3, 2, 1)}, 3).view({B, T, nb * 4 * n});
  auto route = sparse_block_routing(proj.narrow(2, nb * 3 * n + n, nb).to(ct), top_k);  // {rho, w}
  auto S = S0.defined() ? S0 : torch::zeros({B, nb, n, n}, proj.options().dtype(ct));
  auto out = scan(scan_proj, b_beta, route[1], S);  // {yb, S_T}
  auto y = (out[0].to(ct).view({B, T, nb, n}) * route[0].unsqueeze(-1)).sum(2);
  return {y.to(proj.scalar_type()), out[1]};
}

std::vector<torch::Tensor> sparse_block_reference(const torch::Tensor& proj, const torch::Tensor& b_beta,
                                                  const torch::Tensor& S0, int64_t blocks, int64_t top_k,
                                                  int64_t n_state) {
  check_sparse_block_args(proj, b_beta, S0, blocks, top_k, n_state);
  return sparse_block_compose(proj, b_beta, S0, blocks, top_k, n_state,
                              [&](const torch::Tensor& sp, const torch::Tensor& bb, const torch::Tensor& w,
                                  const torch::Tensor& S) {
                                return sparse_block_scan_reference(sp, bb, w, S, blocks, n_state);
                              });
}

}  // namespace elman::ops
