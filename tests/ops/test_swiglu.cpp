// SwiGLU gate and self-gate: the references against a scalar loop and finite differences (CPU), argument errors,
// and the CUDA kernels against the references, forward and gradient (GPU).
#include <cmath>

#include "ops/swiglu/swiglu.h"
#include "tests/support/op_checks.h"

using namespace elman;
using test::expect_all_close;
using test::expect_close;

namespace {
using Op = torch::Tensor (*)(const torch::Tensor&, ops::Impl);

// Forward + backward of y . g for y = op(x): {y, dx}.
std::vector<torch::Tensor> run(Op op, const torch::Tensor& x_in, const torch::Tensor& g, ops::Impl impl) {
  auto x = test::leaf(x_in);
  auto y = op(x, impl);
  (y.to(g.scalar_type()) * g).sum().backward();
  return {y.detach(), x.grad()};
}

std::vector<torch::Tensor> run(const torch::Tensor& gu, const torch::Tensor& g, ops::Impl impl) {
  return run(ops::swiglu, gu, g, impl);
}
}  // namespace

TEST_CASE("swiglu_reference is silu(gate) * up", "[swiglu]") {
  torch::manual_seed(1);
  auto gu = torch::randn({3, 8}, torch::kDouble) * 3;
  auto y = ops::swiglu_reference(gu);
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t c = 0; c < 4; ++c) {
      const double g = gu[r][c].item<double>(), u = gu[r][c + 4].item<double>();
      CHECK(std::abs(y[r][c].item<double>() - g / (1 + std::exp(-g)) * u) < 1e-12);
    }
}

TEST_CASE("swiglu_reference gradient matches finite differences in fp64", "[swiglu]") {
  torch::manual_seed(2);
  auto gu = torch::randn({2, 3, 10}, torch::kDouble) * 3, g = torch::randn({2, 3, 5}, torch::kDouble);
  auto loss = [&] { return (ops::swiglu_reference(gu) * g).sum(); };
  expect_close("dgu (fd)", test::numeric_grad(loss, gu), run(gu, g, ops::Impl::Reference)[1], 1e-7);
}

TEST_CASE("swiglu rejects bad arguments with one line", "[swiglu]") {
  test::require_error([&] { ops::swiglu(torch::randn({2, 5}), ops::Impl::Reference); }, "even size");
  test::require_error([&] { ops::swiglu(torch::randn({2, 6}), ops::Impl::Kernel); }, "CUDA");
}

TEST_CASE("swiglu kernel matches the reference: forward and gradient", "[swiglu][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto shape = GENERATE(values<std::vector<int64_t>>({{1, 2}, {3, 5, 14}, {7, 1000}, {32, 512, 3584}}));
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  std::string name;
  for (auto d : shape) name += std::to_string(d) + "x";
  name += dtype == torch::kFloat ? "fp32" : "bf16";
  SECTION(name) {
    torch::manual_seed(shape.back());
    auto f = torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA);
    auto gu = (torch::randn(shape, f) * 3).to(dtype);
    auto out_shape = shape;
    out_shape.back() /= 2;
    auto g = torch::randn(out_shape, f);
    expect_all_close(name, {"y", "dgu"}, run(gu, g, ops::Impl::Reference), run(gu, g, ops::Impl::Kernel),
                     dtype == torch::kFloat ? 1e-5 : 1e-2);
  }
}

TEST_CASE("swiglu kernel takes a strided and an unaligned input", "[swiglu][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(3);
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA);
  auto gu = torch::randn({12, 5}, f).t(), g = torch::randn({5, 6}, f);
  expect_all_close("strided", {"y", "dgu"}, run(gu, g, ops::Impl::Reference), run(gu, g, ops::Impl::Kernel), 1e-5);
  // Contiguous but 4 bytes past an aligned address: one element per thread instead of four.
  gu = torch::randn({5 * 16 + 1}, f).narrow(0, 1, 5 * 16).view({5, 16}), g = torch::randn({5, 8}, f);
  expect_all_close("unaligned", {"y", "dgu"}, run(gu, g, ops::Impl::Reference), run(gu, g, ops::Impl::Kernel), 1e-5);
}

TEST_CASE("selfgate_reference is x * silu(x)", "[swiglu]") {
  torch::manual_seed(4);
  auto x = torch::randn({3, 7}, torch::kDouble) * 3;
  auto y = ops::selfgate_reference(x);
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t c = 0; c < 7; ++c) {
      const double v = x[r][c].item<double>();
      CHECK(std::abs(y[r][c].item<double>() - v * v / (1 + std::exp(-v))) < 1e-12);
    }
}

TEST_CASE("selfgate_reference gradient matches finite differences in fp64", "[swiglu]") {
  torch::manual_seed(5);
  auto x = torch::randn({2, 3, 9}, torch::kDouble) * 3, g = torch::randn({2, 3, 9}, torch::kDouble);
  auto loss = [&] { return (ops::selfgate_reference(x) * g).sum(); };
  expect_close("dx (fd)", test::numeric_grad(loss, x), run(ops::selfgate, x, g, ops::Impl::Reference)[1], 1e-7);
}

TEST_CASE("selfgate rejects bad arguments with one line", "[swiglu]") {
  test::require_error([&] { ops::selfgate(torch::ones({2, 3}, torch::kLong), ops::Impl::Reference); },
                      "floating-point");
  test::require_error([&] { ops::selfgate(torch::randn({2, 6}), ops::Impl::Kernel); }, "CUDA");
}

TEST_CASE("selfgate kernel matches the reference: forward and gradient", "[swiglu][gpu]") {
  REQUIRE(torch::cuda::is_available());
  // Element counts that are and are not a multiple of 8 (16-byte and one-element paths), up to E42's [32,512,1536].
  const auto shape = GENERATE(values<std::vector<int64_t>>({{1}, {3, 5, 7}, {7, 1000}, {32, 512, 1536}}));
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  std::string name = "selfgate-";
  for (auto d : shape) name += std::to_string(d) + "x";
  name += dtype == torch::kFloat ? "fp32" : "bf16";
  SECTION(name) {
    torch::manual_seed(shape.back() + 7);
    auto f = torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA);
    auto x = (torch::randn(shape, f) * 3).to(dtype);
    auto g = torch::randn(shape, f);
    expect_all_close(name, {"y", "dx"}, run(ops::selfgate, x, g, ops::Impl::Reference),
                     run(ops::selfgate, x, g, ops::Impl::Kernel), dtype == torch::kFloat ? 1e-5 : 1e-2);
  }
}

TEST_CASE("selfgate kernel takes a strided and an unaligned input", "[swiglu][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(6);
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA);
  auto x = torch::randn({12, 5}, f).t(), g = torch::randn({5, 12}, f);
  expect_all_close("selfgate strided", {"y", "dx"}, run(ops::selfgate, x, g, ops::Impl::Reference),
                   run(ops::selfgate, x, g, ops::Impl::Kernel), 1e-5);
  x = torch::randn({5 * 16 + 1}, f).narrow(0, 1, 5 * 16).view({5, 16}), g = torch::randn({5, 16}, f);
  expect_all_close("selfgate unaligned", {"y", "dx"}, run(ops::selfgate, x, g, ops::Impl::Reference),
                   run(ops::selfgate, x, g, ops::Impl::Kernel), 1e-5);
}
