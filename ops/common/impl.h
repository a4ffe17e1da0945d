// Which implementation of a recurrent cell runs: our CUDA kernel, the pure-LibTorch reference, or (for ops that
// have one, e.g. Mamba2's SSD scan) a pure-LibTorch chunked algorithm, chosen by name (--impl chunked).
// There is no automatic fallback: asking for the kernel where it cannot run is an error.
#pragma once
#include <ATen/ATen.h>

#include <string>

namespace elman::ops {

enum class Impl { Kernel, Reference, Chunked };

inline const char* impl_name(Impl impl) {
  return impl == Impl::Kernel ? "cuda-kernel" : impl == Impl::Chunked ? "libtorch-chunked" : "reference";
}

// True when this binary was built with the CUDA kernels.
constexpr bool built_with_cuda() {
#ifdef ELMAN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// Throws unless op `name`'s CUDA kernel can run on `t`: a binary built with CUDA and a CUDA tensor.
inline void check_kernel_runs(const char* name, const at::Tensor& t) {
  TORCH_CHECK(built_with_cuda(), name, ": this binary was built without CUDA, so the kernel implementation is "
              "unavailable; rebuild with CUDA or use the reference implementation");
  TORCH_CHECK(t.defined() && t.is_cuda(), name,
              ": the CUDA kernel needs CUDA tensors; use the reference implementation on CPU");
}

}  // namespace elman::ops
