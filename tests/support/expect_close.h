// One comparison helper for every kernel-vs-reference check: fails on any non-finite value on either
// side, passes when max |ref - got| <= 1e-6, otherwise needs ||ref - got||_2 / ||ref||_2 < ratio.
// Always prints "name max_abs=... rel=...".
#pragma once
#include <torch/torch.h>

#include <string>

namespace elman::test {

void expect_close(const std::string& name, const torch::Tensor& ref, const torch::Tensor& got, double ratio);

// Central finite differences of scalar f() with respect to every element of `x` (fp64, in place).
torch::Tensor numeric_grad(const std::function<torch::Tensor()>& f, torch::Tensor x, double eps = 1e-6);

// A file of real text for end-to-end tests: the project's own sources and docs, repeated to `min_bytes`.
std::string real_text_file(const std::string& dir, int64_t min_bytes);

}  // namespace elman::test
