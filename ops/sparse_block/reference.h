// E87 sparse block memory (spec 2.21): the pure-LibTorch reference, which is the spec. B_k memory blocks, each
// with its own n x n state S_j (rows i, columns c), a router that reads from all blocks and writes to the top K:
//
//   l    = router logits (the caller's GEMM)               [B_k]
//   rho  = softmax(l)                                      read weights, all blocks
//   w    = softmax of l over the top-K blocks, 0 elsewhere update weights (ties: the lower block index wins;
//                                                          the selection is constant in backward)
//   per block j:  khat = k_j / (||k_j||_2 + 1e-6),  beta = sigmoid(b~_j + b_beta[j])
//                 P    = tanh(diag(beta) S_j + (v_j - S_j khat) khat^T)
//                 S_j  = (1 - w_j) S_j + w_j P
//   y    = sum_j rho_j selfgate(S_j q),  selfgate(u) = u^2 sigmoid(u),  q shared by all blocks
//
// Layout: proj [B,T, B_k*3n + n + B_k] = [per block (k | v | b~)] [q] [router logits], from one GEMM;
// b_beta [B_k,n]; S0 [B,B_k,n,n] or undefined (zeros).
// Returns {y [B,T,n] in proj's dtype, S_T [B,B_k,n,n] fp32 (fp64 for fp64 inputs)}, computed in fp32 (fp64 for
// fp64 inputs): routing by LibTorch ops on all T at once, the state recurrence by a loop over T; differentiable
// through autograd with respect to proj (logits through both softmaxes), b_beta and S0.
//
// The op splits into three parts that the CUDA path shares except for the scan:
//   sparse_block_routing  logits -> {rho, w}
//   the scan              per block the recurrence above with w as an input: scan_proj [B,T,B_k*4n] with per
//                         block [k | v | q | b~] (q repeated, the delta_matrix layout), w [B,T,B_k]
//                         -> {yb [B,T,B_k*n] = selfgate(S_j q) per block in scan_proj's dtype, S_T}
//   aggregation           y = sum_j rho_j yb_j
#pragma once
#include <torch/torch.h>

#include <functional>
#include <vector>

namespace elman::ops {

constexpr int64_t kSparseBlockMaxBlocks = 32;
constexpr int64_t kSparseBlockMaxNState = 64;

// Checks blocks (1..32), top_k (1..blocks), n_state (1..64) and the shapes for both implementations; throws a
// one-line c10::Error naming the argument and the fix.
void check_sparse_block_args(const torch::Tensor& proj, const torch::Tensor& b_beta, const torch::Tensor& S0,
                             int64_t blocks, int64_t top_k, int64_t n_state);

// logits [B,T,B_k] -> {rho, w} in the logits' dtype. The top-K set is the blocks whose rank (number of blocks
// with a larger logit, plus those with an equal logit and a lower index) is below K: any K, no fixed arrays.
std::vector<torch::Tensor> sparse_block_routing(const torch::Tensor& logits, int64_t top_k);

// The scan's reference: scan_proj [B,T,B_k*4n] (per block [k | v | q | b~]), b_beta [B_k,n], w [B,T,B_k],
// S0 [B,B_k,n,n] (defined) -> {yb [B,T,B_k*n] in scan_proj's dtype, S_T [B,B_k,n,n] in the compute dtype}.
std::vector<torch::Tensor> sparse_block_scan_reference(const torch::Tensor& scan_proj, const torch::Tensor& b_beta,
                                                       const torch::Tensor& w, const torch::Tensor& S0,
                                                       int64_t blocks, int64_t n_state);

using SparseBlockScan = std::function<std::vector<torch::Tensor>(
    const torch::Tensor& scan_proj, const torch::Tensor& b_beta, const torch::Tensor& w, const torch::Tensor& S0)>;

// Routing, `scan` and aggregation (shared by the reference and the kernel path; arguments already checked).
std::vector<torch::Tensor> sparse_block_compose(const torch::Tensor& proj, const torch::Tensor& b_beta,
                                                const torch::Tensor& S0, int64_t blocks, int64_t top_k,
                                                int64_t n_state, const SparseBlockScan& scan);

std::vector<torch::Tensor> sparse_block_reference(const torch::Tensor& proj, const torch::Tensor& b_beta,
                                                  const torch::Tensor& S0, int64_t blocks, int64_t top_k,
                                                  int64_t n_state);

}  // namespace elman::ops
