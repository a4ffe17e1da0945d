// Fused residual add + RMSNorm: the reference against a scalar loop and finite differences (CPU), argument errors,
// and the CUDA kernel against the reference, forward and every gradient (GPU).
#include <array>
#include <cmath>

#include "ops/rms_norm/rms_norm.h"
#include "tests/support/op_checks.h"

using namespace elman;
using test::expect_all_close;
using test::expect_close;

namespace {
struct Inputs {
  torch::Tensor residual, y, w, gr, gn;  // gr, gn: the loss's weights on r and n
};
Inputs make_inputs(int64_t rows, int64_t C, at::ScalarType rdt, at::ScalarType ydt, torch::Device dev,
                   bool with_y = true) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  Inputs in;
  in.residual = (torch::randn({rows, C}, f) * 2).to(rdt);
  if (with_y) in.y = torch::randn({rows, C}, f).to(ydt);
  in.w = 1 + 0.3 * torch::randn({C}, f);
  in.gr = torch::randn({rows, C}, f);
  in.gn = torch::randn({rows, C}, f);
  return in;
}
// Forward + backward of (r . gr) + (n . gn): {r, n, dresidual, dy, dw}.
std::vector<torch::Tensor> run(const Inputs& in, at::ScalarType out, ops::Impl impl, bool use_r = true) {
  auto res = test::leaf(in.residual), y = test::leaf(in.y), w = test::leaf(in.w);
  auto o = ops::add_rms_norm(res, y, w, 1e-5, out, impl);
  auto loss = (o[1].to(torch::kFloat) * in.gn).sum();
  if (use_r && in.y.defined()) loss = loss + (o[0].to(torch::kFloat) * in.gr).sum();
  loss.backward();
  return {o[0].detach(), o[1].detach(), test::grad_of(res), test::grad_of(y), test::grad_of(w)};
}
const std::vector<std::string> kNames = {"r", "n", "dresidual", "dy", "dw"};
}  // namespace

TEST_CASE("add_rms_norm_reference equals a scalar loop", "[rms_norm]") {
  torch::manual_seed(1);
  auto in = make_inputs(3, 7, torch::kDouble, torch::kDouble, torch::kCPU);
  auto w = in.w.to(torch::kDouble);
  auto o = ops::add_rms_norm_reference(in.residual, in.y, w, 1e-5, torch::kDouble);
  for (int64_t i = 0; i < 3; ++i) {
    double ss = 0;
    for (int64_t c = 0; c < 7; ++c) {
      const double r = in.residual[i][c].item<double>() + in.y[i][c].item<double>();
      CHECK(std::abs(o[0][i][c].item<double>() - r) < 1e-12);
      ss += r * r;
    }
    for (int64_t c = 0; c < 7; ++c) {
      const double r = o[0][i][c].item<double>();
      CHECK(std::abs(o[1][i][c].item<double>() - r / std::sqrt(ss / 7 + 1e-5) * w[c].item<double>()) < 1e-12);
    }
  }
}

TEST_CASE("add_rms_norm_reference gradients match finite differences in fp64", "[rms_norm]") {
  torch::manual_seed(2);
  auto in = make_inputs(4, 5, torch::kDouble, torch::kDouble, torch::kCPU);
  in.w = in.w.to(torch::kDouble), in.gr = in.gr.to(torch::kDouble), in.gn = in.gn.to(torch::kDouble);
  auto loss = [&] {
    auto o = ops::add_rms_norm_reference(in.residual, in.y, in.w, 1e-5, torch::kDouble);
    return (o[0] * in.gr).sum() + (o[1] * in.gn).sum();
  };
  auto g = run(in, torch::kDouble, ops::Impl::Reference);
  expect_close("dresidual (fd)", test::numeric_grad(loss, in.residual), g[2], 1e-7);
  expect_close("dy (fd)", test::numeric_grad(loss, in.y), g[3], 1e-7);
  expect_close("dw (fd)", test::numeric_grad(loss, in.w), g[4], 1e-7);
}

TEST_CASE("add_rms_norm rejects bad arguments with one line", "[rms_norm]") {
  auto in = make_inputs(2, 6, torch::kFloat, torch::kFloat, torch::kCPU);
  test::require_error([&] { ops::add_rms_norm(in.residual, in.y, in.w.narrow(0, 0, 5), 1e-5, torch::kFloat,
                                              ops::Impl::Reference); }, "w must be [6]");
  test::require_error([&] { ops::add_rms_norm(in.residual, in.y.narrow(1, 0, 3), in.w, 1e-5, torch::kFloat,
                                              ops::Impl::Reference); }, "y has shape");
  test::require_error([&] { ops::add_rms_norm(in.residual, in.y, in.w, 1e-5, torch::kFloat, ops::Impl::Kernel); },
                      "CUDA");
}

TEST_CASE("add_rms_norm kernel matches the reference: forward and every gradient", "[rms_norm][gpu]") {
  REQUIRE(torch::cuda::is_available());
  using Shape = std::pair<int64_t, int64_t>;  // (rows, C)
  const auto shape = GENERATE(values<Shape>({{1, 1}, {3, 7}, {37, 64}, {129, 640}, {5, 1000}, {16384, 640}, {2, 4099}}));
  const auto dt = GENERATE(values<std::array<at::ScalarType, 3>>({{torch::kFloat, torch::kFloat, torch::kFloat},
                                                                   {torch::kFloat, torch::kBFloat16, torch::kBFloat16},
                                                                   {torch::kBFloat16, torch::kBFloat16, torch::kBFloat16},
                                                                   {torch::kFloat, torch::kFloat, torch::kBFloat16}}));
  const bool with_y = GENERATE(true, false);
  const bool all_fp32 = dt[0] == torch::kFloat && dt[1] == torch::kFloat && dt[2] == torch::kFloat;
  const std::string name = std::to_string(shape.first) + "x" + std::to_string(shape.second) +
                           (dt[0] == torch::kFloat ? "-r32" : "-r16") + (dt[1] == torch::kFloat ? "-y32" : "-y16") +
                           (dt[2] == torch::kFloat ? "-n32" : "-n16") + (with_y ? "" : "-noy");
  SECTION(name) {
    torch::manual_seed(shape.first * 31 + shape.second);
    auto in = make_inputs(shape.first, shape.second, dt[0], dt[1], torch::kCUDA, with_y);
    expect_all_close(name, kNames, run(in, dt[2], ops::Impl::Reference), run(in, dt[2], ops::Impl::Kernel),
                     all_fp32 ? 1e-5 : 1e-2);
  }
}

TEST_CASE("add_rms_norm kernel with only n in the loss, a non-contiguous and an unaligned residual", "[rms_norm][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(3);
  auto in = make_inputs(33, 96, torch::kFloat, torch::kFloat, torch::kCUDA);
  expect_all_close("n only", kNames, run(in, torch::kFloat, ops::Impl::Reference, false),
                   run(in, torch::kFloat, ops::Impl::Kernel, false), 1e-5);
  in.residual = torch::randn({96, 33}, in.residual.options()).t();
  expect_all_close("strided", kNames, run(in, torch::kFloat, ops::Impl::Reference),
                   run(in, torch::kFloat, ops::Impl::Kernel), 1e-5);
  // Contiguous but 4 bytes past an aligned address: the kernel moves one element per access instead of four.
  in.residual = torch::randn({33 * 96 + 1}, in.residual.options()).narrow(0, 1, 33 * 96).view({33, 96});
  expect_all_close("unaligned", kNames, run(in, torch::kFloat, ops::Impl::Reference),
                   run(in, torch::kFloat, ops::Impl::Kernel), 1e-5);
}
