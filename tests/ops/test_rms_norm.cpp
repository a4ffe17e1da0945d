// Fused residual add + RMSNorm / LayerNorm: the references against a scalar loop, torch's layer_norm and finite
// differences (CPU), argument errors, and the CUDA kernels against the references, forward and every gradient (GPU).
#include <array>
#include <cmath>

#include "ops/rms_norm/rms_norm.h"
#include "tests/support/op_checks.h"

using namespace elman;
using test::expect_all_close;
using test::expect_close;

namespace {
struct Inputs {
  torch::Tensor residual, y, w, b, gr, gn;  // b: LayerNorm's bias (undefined: RMSNorm); gr, gn: the loss's weights
};
Inputs make_inputs(int64_t rows, int64_t C, at::ScalarType rdt, at::ScalarType ydt, torch::Device dev,
                   bool with_y = true, bool layer = false) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  Inputs in;
  in.residual = (torch::randn({rows, C}, f) * 2).to(rdt);
  if (with_y) in.y = torch::randn({rows, C}, f).to(ydt);
  in.w = 1 + 0.3 * torch::randn({C}, f);
  if (layer) in.b = 0.5 * torch::randn({C}, f);
  in.gr = torch::randn({rows, C}, f);
  in.gn = torch::randn({rows, C}, f);
  return in;
}
// Forward + backward of (r . gr) + (n . gn): {r, n, dresidual, dy, dw, db}.
std::vector<torch::Tensor> run(const Inputs& in, at::ScalarType out, ops::Impl impl, bool use_r = true) {
  auto res = test::leaf(in.residual), y = test::leaf(in.y), w = test::leaf(in.w), b = test::leaf(in.b);
  auto o = b.defined() ? ops::add_layer_norm(res, y, w, b, 1e-5, out, impl) : ops::add_rms_norm(res, y, w, 1e-5, out, impl);
  auto loss = (o[1].to(torch::kFloat) * in.gn).sum();
  if (use_r && in.y.defined()) loss = loss + (o[0].to(torch::kFloat) * in.gr).sum();
  loss.backward();
  return {o[0].detach(), o[1].detach(), test::grad_of(res), test::grad_of(y), test::grad_of(w), test::grad_of(b)};
}
const std::vector<std::string> kNames = {"r", "n", "dresidual", "dy", "dw", "db"};
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

TEST_CASE("add_layer_norm_reference equals torch's layer_norm of residual + y", "[rms_norm]") {
  torch::manual_seed(4);
  auto in = make_inputs(5, 9, torch::kDouble, torch::kDouble, torch::kCPU, true, true);
  auto w = in.w.to(torch::kDouble), b = in.b.to(torch::kDouble);
  auto o = ops::add_layer_norm_reference(in.residual, in.y, w, b, 1e-5, torch::kDouble);
  expect_close("r", in.residual + in.y, o[0], 1e-12);
  expect_close("n", torch::layer_norm(in.residual + in.y, {9}, w, b, 1e-5), o[1], 1e-12);
}

TEST_CASE("add_rms_norm_reference and add_layer_norm_reference gradients match finite differences in fp64",
          "[rms_norm]") {
  const bool layer = GENERATE(false, true);
  torch::manual_seed(2);
  auto in = make_inputs(4, 5, torch::kDouble, torch::kDouble, torch::kCPU, true, layer);
  in.w = in.w.to(torch::kDouble), in.gr = in.gr.to(torch::kDouble), in.gn = in.gn.to(torch::kDouble);
  if (layer) in.b = in.b.to(torch::kDouble);
  auto loss = [&] {
    auto o = layer ? ops::add_layer_norm_reference(in.residual, in.y, in.w, in.b, 1e-5, torch::kDouble)
                   : ops::add_rms_norm_reference(in.residual, in.y, in.w, 1e-5, torch::kDouble);
    return (o[0] * in.gr).sum() + (o[1] * in.gn).sum();
  };
  auto g = run(in, torch::kDouble, ops::Impl::Reference);
  expect_close("dresidual (fd)", test::numeric_grad(loss, in.residual), g[2], 1e-7);
  expect_close("dy (fd)", test::numeric_grad(loss, in.y), g[3], 1e-7);
  expect_close("dw (fd)", test::numeric_grad(loss, in.w), g[4], 1e-7);
  if (layer) expect_close("db (fd)", test::numeric_grad(loss, in.b), g[5], 1e-7);
}

TEST_CASE("add_rms_norm rejects bad arguments with one line", "[rms_norm]") {
  auto in = make_inputs(2, 6, torch::kFloat, torch::kFloat, torch::kCPU);
  test::require_error([&] { ops::add_rms_norm(in.residual, in.y, in.w.narrow(0, 0, 5), 1e-5, torch::kFloat,
                                              ops::Impl::Reference); }, "w must be [6]");
  test::require_error([&] { ops::add_rms_norm(in.residual, in.y.narrow(1, 0, 3), in.w, 1e-5, torch::kFloat,
                                              ops::Impl::Reference); }, "y has shape");
  test::require_error([&] { ops::add_rms_norm(in.residual, in.y, in.w, 1e-5, torch::kFloat, ops::Impl::Kernel); },
                      "CUDA");
  test::require_error([&] { ops::add_layer_norm(in.residual, in.y, in.w, in.w.narrow(0, 0, 4), 1e-5, torch::kFloat,
                                                ops::Impl::Reference); }, "add_layer_norm: b must be [6]");
  test::require_error([&] { ops::add_layer_norm(in.residual, in.y, in.w, torch::Tensor(), 1e-5, torch::kFloat,
                                                ops::Impl::Reference); }, "add_layer_norm: b must be [6]");
}

TEST_CASE("add_rms_norm and add_layer_norm kernels match the references: forward and every gradient",
          "[rms_norm][gpu]") {
  REQUIRE(torch::cuda::is_available());
  using Shape = std::pair<int64_t, int64_t>;  // (rows, C)
  const auto shape = GENERATE(values<Shape>({{1, 1}, {3, 7}, {37, 64}, {129, 640}, {5, 1000}, {16384, 640}, {4096, 896}, {2, 4099}}));
  const auto dt = GENERATE(values<std::array<at::ScalarType, 3>>({{torch::kFloat, torch::kFloat, torch::kFloat},
                                                                   {torch::kFloat, torch::kBFloat16, torch::kBFloat16},
                                                                   {torch::kBFloat16, torch::kBFloat16, torch::kBFloat16},
                                                                   {torch::kFloat, torch::kFloat, torch::kBFloat16}}));
  const bool with_y = GENERATE(true, false);
  const bool layer = GENERATE(false, true);
  const bool all_fp32 = dt[0] == torch::kFloat && dt[1] == torch::kFloat && dt[2] == torch::kFloat;
  const std::string name = std::to_string(shape.first) + "x" + std::to_string(shape.second) +
                           (dt[0] == torch::kFloat ? "-r32" : "-r16") + (dt[1] == torch::kFloat ? "-y32" : "-y16") +
                           (dt[2] == torch::kFloat ? "-n32" : "-n16") + (with_y ? "" : "-noy") +
                           (layer ? "-layer" : "");
  SECTION(name) {
    torch::manual_seed(shape.first * 31 + shape.second);
    auto in = make_inputs(shape.first, shape.second, dt[0], dt[1], torch::kCUDA, with_y, layer);
    expect_all_close(name, kNames, run(in, dt[2], ops::Impl::Reference), run(in, dt[2], ops::Impl::Kernel),
                     all_fp32 ? 1e-5 : 1e-2);
  }
}

TEST_CASE("add_rms_norm and add_layer_norm kernels with only n in the loss, a non-contiguous and an unaligned residual",
          "[rms_norm][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const bool layer = GENERATE(false, true);
  torch::manual_seed(3);
  auto in = make_inputs(33, 96, torch::kFloat, torch::kFloat, torch::kCUDA, true, layer);
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

TEST_CASE("add_layer_norm kernel refuses rows longer than its shared-memory partials hold", "[rms_norm][gpu]") {
  REQUIRE(torch::cuda::is_available());
  auto in = make_inputs(2, 6145, torch::kFloat, torch::kFloat, torch::kCUDA, true, true);
  test::require_error([&] { ops::add_layer_norm(in.residual, in.y, in.w, in.b, 1e-5, torch::kFloat, ops::Impl::Kernel); },
                      "add_layer_norm: the kernel supports rows of up to 6144 elements, got 6145");
  in = make_inputs(2, 6145, torch::kFloat, torch::kFloat, torch::kCUDA);
  expect_all_close("rms 6145", kNames, run(in, torch::kFloat, ops::Impl::Reference),
                   run(in, torch::kFloat, ops::Impl::Kernel), 1e-5);
}
