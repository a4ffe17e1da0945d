// Allocation of kernel outputs. Every op allocates its outputs through `empty_output`, so that tests
// can poison them: with poisoning on, outputs start as NaN and any element a kernel forgets to write
// fails the comparison against the reference.
#pragma once
#include <ATen/ATen.h>

#include <limits>

namespace elman::ops {

// Poisoning is on when the environment sets ELMAN_POISON=1 or a test calls set_poison(true).
void set_poison(bool on);
bool poison_enabled();

inline at::Tensor empty_output(at::IntArrayRef shape, const at::TensorOptions& opts) {
  if (poison_enabled()) return at::full(shape, std::numeric_limits<float>::quiet_NaN(), opts);
  return at::empty(shape, opts);
}

}  // namespace elman::ops
