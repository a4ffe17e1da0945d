#include "ops/gated_delta/gated_delta.h"

namespace elman::ops {

std::vector<torch::Tensor> gated_delta(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const torch::Tensor& g, const torch::Tensor& beta, const torch::Tensor& h0,
                                       Impl impl) {
  check_gated_delta_args(q, k, v, g, beta, h0);
  if (impl == Impl::Reference) return gated_delta_reference(q, k, v, g, beta, h0);
  if (impl == Impl::Chunked) return gated_delta_chunked(q, k, v, g, beta, h0, kGatedDeltaChunk);
  TORCH_CHECK(false, "gated_delta: the CUDA kernel for the gated delta rule is not built yet; use --impl chunked "
              "(or --impl reference)");
}

}  // namespace elman::ops
