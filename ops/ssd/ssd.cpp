#include "ops/ssd/ssd.h"

namespace elman::ops {

std::vector<torch::Tensor> ssd(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
                               const torch::Tensor& Bm, const torch::Tensor& Cm, const torch::Tensor& D,
                               const torch::Tensor& h0, Impl impl) {
  check_ssd_args(x, dt, A, Bm, Cm, D, h0);
  if (impl == Impl::Reference) return ssd_reference(x, dt, A, Bm, Cm, D, h0);
  if (impl == Impl::Chunked) return ssd_chunked(x, dt, A, Bm, Cm, D, h0, kSsdChunk);
  TORCH_CHECK(false, "ssd: there is no CUDA kernel for the SSD scan yet; use the chunked or the reference implementation");
}

}  // namespace elman::ops
