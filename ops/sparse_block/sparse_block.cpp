#include "ops/sparse_block/sparse_block.h"

#ifdef ELMAN_WITH_CUDA
#include "cuda/sparse_block/sparse_block.h"
#endif

namespace elman::ops {
namespace {

void check_scan_args(const torch::Tensor& scan_proj, const torch::Tensor& b_beta, const torch::Tensor& w,
                     const torch::Tensor& S0, int64_t blocks, int64_t n_state) {
  TORCH_CHECK(blocks >= 1 && blocks <= kSparseBlockMaxBlocks, "sparse_block: blocks ", blocks,
              " is not supported; use --blocks from 1 to ", kSparseBlockMaxBlocks);
  TORCH_CHECK(n_state >= 1 && n_state <= kSparseBlockMaxNState, "sparse_block: n_state ", n_state,
              " is not supported; use an n_state from 1 to ", kSparseBlockMaxNState, " (--nstate)");
  TORCH_CHECK(scan_proj.defined() && scan_proj.dim() == 3 && scan_proj.is_floating_point() &&
                  scan_proj.size(0) >= 1 && scan_proj.size(1) >= 1 && scan_proj.size(2) == blocks * 4 * n_state,
              "sparse_block_scan: scan_proj must be a float [B,T,", blocks * 4 * n_state, "]");
  const int64_t B = scan_proj.size(0), T = scan_proj.size(1);
  TORCH_CHECK(b_beta.defined() && b_beta.sizes() == torch::IntArrayRef({blocks, n_state}),
              "sparse_block_scan: b_beta must be [", blocks, ",", n_state, "]");
  TORCH_CHECK(w.defined() && w.sizes() == torch::IntArrayRef({B, T, blocks}) && w.is_floating_point(),
              "sparse_block_scan: w must be a float [", B, ",", T, ",", blocks, "]");
  if (S0.defined())
    TORCH_CHECK(S0.sizes() == torch::IntArrayRef({B, blocks, n_state, n_state}) && S0.is_floating_point(),
                "sparse_block_scan: S0 must be a float [", B, ",", blocks, ",", n_state, ",", n_state, "]");
}

#ifdef ELMAN_WITH_CUDA
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct SparseBlockScanFunction : public torch::autograd::Function<SparseBlockScanFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& scan_proj, const torch::Tensor& b_beta,
                               const torch::Tensor& w, const torch::Tensor& S0, int64_t blocks, int64_t n) {
    auto out = cuda::sparse_block_fwd(scan_proj, b_beta, w, S0, blocks, n);  // {yb, S_T, ckpt}
    ctx->save_for_backward({scan_proj, b_beta, w, out[2]});
    ctx->saved_data["blocks"] = blocks;
    ctx->saved_data["n"] = n;
    ctx->saved_data["S0_dtype"] = static_cast<int64_t>(S0.scalar_type());
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined: the kernel reads it as zero
    return {out[0], out[1]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &scan_proj = saved[0], &b_beta = saved[1], &w = saved[2], &ckpt = saved[3];
    const int64_t blocks = ctx->saved_data["blocks"].toInt(), n = ctx->saved_data["n"].toInt();
    const auto S0_dtype = static_cast<at::ScalarType>(ctx->saved_data["S0_dtype"].toInt());
    // {dscan_proj, db_beta, dw, dS0}
    auto g = cuda::sparse_block_bwd(scan_proj, b_beta, w, ckpt, grads[0], grads[1], blocks, n);
    return {g[0], g[1].to(b_beta.scalar_type()), g[2].to(w.scalar_type()), g[3].to(S0_dtype), torch::Tensor(),
            torch::Tensor()};
  }
};
#endif

std::vector<torch::Tensor> scan_impl(const torch::Tensor& scan_proj, const torch::Tensor& b_beta,
                                     const torch::Tensor& w, const torch::Tensor& S0, int64_t blocks, int64_t n,
                                     Impl impl) {
  auto S = S0.defined() ? S0
                        : torch::zeros({scan_proj.size(0), blocks, n, n}, scan_proj.options().dtype(torch::kFloat));
  if (impl == Impl::Reference) return sparse_block_scan_reference(scan_proj, b_beta, w, S, blocks, n);
#ifdef ELMAN_WITH_CUDA
  TORCH_CHECK(b_beta.is_cuda() && w.is_cuda() && S.is_cuda(), "sparse_block: the CUDA kernel needs every input on the GPU");
  return SparseBlockScanFunction::apply(scan_proj, b_beta, w, S, blocks, n);
#else
  return {};  // unreachable: the callers' check_kernel_runs throws in a build without CUDA
#endif
}

}  // namespace

std::vector<torch::Tensor> sparse_block(const torch::Tensor& proj, const torch::Tensor& b_beta, const torch::Tensor& S0,
                                        int64_t blocks, int64_t top_k, int64_t n_state, Impl impl) {
  check_sparse_block_args(proj, b_beta, S0, blocks, top_k, n_state);  // also the kernel's limits
  if (impl == Impl::Reference) return sparse_block_reference(proj, b_beta, S0, blocks, top_k, n_state);
  check_kernel_runs("sparse_block", proj);
  return sparse_block_compose(proj, b_beta, S0, blocks, top_k, n_state,
                              [&](const torch::Tensor& sp, const torch::Tensor& bb, const torch::Tensor& w,
                                  const torch::Tensor& S) { return scan_impl(sp, bb, w, S, blocks, n_state, impl); });
}

std::vector<torch::Tensor> sparse_block_scan(const torch::Tensor& scan_proj, const torch::Tensor& b_beta,
                                             const torch::Tensor& w, const torch::Tensor& S0, int64_t blocks,
                                             int64_t n_state, Impl impl) {
  check_scan_args(scan_proj, b_beta, w, S0, blocks, n_state);
  if (impl == Impl::Kernel) check_kernel_runs("sparse_block", scan_proj);
  return scan_impl(scan_proj, b_beta, w, S0, blocks, n_state, impl);
}

}  // namespace elman::ops
