// Which implementation of a recurrent cell runs: our CUDA kernel or the pure-LibTorch reference.
// There is no automatic fallback: asking for the kernel where it cannot run is an error.
#pragma once
#include <string>

namespace elman::ops {

enum class Impl { Kernel, Reference };

inline const char* impl_name(Impl impl) { return impl == Impl::Kernel ? "cuda-kernel" : "reference"; }

// True when this binary was built with the CUDA kernels.
constexpr bool built_with_cuda() {
#ifdef ELMAN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace elman::ops
