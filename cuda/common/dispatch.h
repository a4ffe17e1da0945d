// Host-side dispatch over the element types our elementwise kernels instantiate (float and bfloat16).
#pragma once
#include <ATen/ATen.h>

namespace elman::cuda {

// Calls f with a value of the C++ type of t: float or c10::BFloat16 (any other dtype throws).
template <typename F>
void with_type(at::ScalarType t, F&& f) {
  if (t == at::kFloat) f(float{});
  else if (t == at::kBFloat16) f(c10::BFloat16{});
  else TORCH_CHECK(false, "our CUDA kernels take float32 or bfloat16 tensors, got ", t);
}

}  // namespace elman::cuda
