// Which implementation of a recurrent cell runs: our CUDA kernel, the pure-LibTorch reference, or (for ops that
// have one, e.g. Mamba2's SSD scan) a pure-LibTorch chunked algorithm, chosen by name (--impl chunked).
// There is no automatic fallback: asking for the kernel where it cannot run is an error.
#pragma once
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include <string>

namespace elman::ops {

enum class Impl { Kernel, Reference, Chunked };

inline const char* impl_name(Impl impl) {
  return impl == Impl::Kernel ? "cuda-kernel" : impl == Impl::Chunked ? "libtorch-chunked" : "reference";
}

// The implementation of a model's fused helper ops (norms, short conv) when its cell runs `cell`: our kernels under
// --impl kernel, their LibTorch references otherwise (a chunked run stays all LibTorch).
inline Impl fused_impl(Impl cell) { return cell == Impl::Kernel ? Impl::Kernel : Impl::Reference; }

// The dtype a fused op hands to the next GEMM: the autocast dtype while autocast is on for t's device (the GEMM
// reads it without a cast), else t's own dtype.
inline at::ScalarType autocast_dtype_or(const at::Tensor& t) {
  const auto dev = t.device().type();
  return at::autocast::is_autocast_enabled(dev) ? at::autocast::get_autocast_dtype(dev) : t.scalar_type();
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
