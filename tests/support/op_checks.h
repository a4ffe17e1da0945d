// Helpers shared by the op tests (kernel vs reference): leaf copies, optional gradients, a named comparison
// of every output and gradient, and the check that an error is one line naming the problem.
#pragma once
#include <ATen/Context.h>
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "ops/common/grad_sink.h"
#include "tests/support/catch.h"
#include "tests/support/expect_close.h"

namespace elman::test {

// A detached copy that requires grad (undefined stays undefined).
inline torch::Tensor leaf(const torch::Tensor& t) {
  return t.defined() ? t.detach().clone().requires_grad_(true) : torch::Tensor();
}

// t's gradient, or an undefined tensor when t is undefined.
inline torch::Tensor grad_of(const torch::Tensor& t) { return t.defined() ? t.grad() : torch::Tensor(); }

// expect_close on every pair that both sides have (names[i] labels ref[i]); defined-ness must match.
inline void expect_all_close(const std::string& tag, const std::vector<std::string>& names,
                             const std::vector<torch::Tensor>& ref, const std::vector<torch::Tensor>& got,
                             double ratio) {
  REQUIRE(ref.size() == got.size());
  REQUIRE(ref.size() <= names.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    INFO(tag + " " + names[i]);
    REQUIRE(ref[i].defined() == got[i].defined());
    if (ref[i].defined()) expect_close(tag + " " + names[i], ref[i], got[i], ratio);
  }
}

// Fails unless f() throws a c10::Error whose message contains `needle` and is one line.
template <typename F>
void require_error(F&& f, const std::string& needle) {
  try {
    f();
    FAIL("expected an error containing '" << needle << "'");
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    INFO(msg);
    CHECK(msg.find(needle) != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
  }
}

// The columns [offset, offset + n) of `wide` (along its last dim) as a piece of a split_with_slots of it, with the
// piece's gradient slot: an op's input as the layers give it (a piece of their projection).
inline std::pair<torch::Tensor, ops::GradSlot> slotted_columns(const torch::Tensor& wide, int64_t offset, int64_t n) {
  std::vector<int64_t> cols;
  if (offset > 0) cols.push_back(offset);
  cols.push_back(n);
  if (wide.size(-1) > offset + n) cols.push_back(wide.size(-1) - offset - n);
  const auto split = ops::split_with_slots(wide, cols);
  const size_t k = offset > 0 ? 1 : 0;
  return {split.pieces[k], split.slots[k]};
}

// While alive, cuDNN runs fp32 convolutions in true fp32 (LibTorch lets it use TF32 by default), so that fp32
// comparisons against a reference built on torch::conv1d are not limited by TF32's 10-bit mantissa.
struct NoCudnnTf32 {
  bool was = at::globalContext().allowTF32CuDNN();
  NoCudnnTf32() { at::globalContext().setAllowTF32CuDNN(false); }
  ~NoCudnnTf32() { at::globalContext().setAllowTF32CuDNN(was); }
  NoCudnnTf32(const NoCudnnTf32&) = delete;
  NoCudnnTf32& operator=(const NoCudnnTf32&) = delete;
};

}  // namespace elman::test
