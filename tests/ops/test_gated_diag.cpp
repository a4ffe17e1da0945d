// Gated-diagonal cells (E61, E62, E64, E65, E67, E68, E74 diagonal): the reference against hand arithmetic and finite
// differences (CPU), and the CUDA kernel against the reference, forward and every gradient (GPU).
#include <algorithm>
#include <cmath>

#include "ops/gated_diag/gated_diag.h"
#include "ops/gated_diag/reference.h"
#include "tests/support/catch.h"
#include "tests/support/expect_close.h"

using namespace elman;
using ops::DiagCell;
using test::expect_close;

namespace {
const std::vector<DiagCell> kE74Cells = {DiagCell::E74DeltaTanh, DiagCell::E74SimpleTanh, DiagCell::E74SimpleLinear};
const std::vector<DiagCell> kCells = {DiagCell::E61,          DiagCell::E62,           DiagCell::E64,
                                      DiagCell::E65,          DiagCell::E67,           DiagCell::E68,
                                      DiagCell::E74DeltaTanh, DiagCell::E74SimpleTanh, DiagCell::E74SimpleLinear};
bool is_e74(DiagCell cell) { return std::find(kE74Cells.begin(), kE74Cells.end(), cell) != kE74Cells.end(); }

struct Inputs {
  torch::Tensor proj, w, h0, dy, dh_T;
};

// Random inputs; gate pre-activations spread so the gates cover (0, 1) from near 0 to near 1. The E74 cells
// get k ~ N(0, 1) (unnormalised, as at the 100M init: |k| > sqrt 2 about one step in six, so 1 - k^2 < -1 occurs).
Inputs make_inputs(DiagCell cell, int64_t B, int64_t T, int64_t D, torch::Dtype dtype, torch::Device dev) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  const auto P = static_cast<int64_t>(ops::diag_cell_info(cell).params.size());
  Inputs in;
  in.proj = torch::cat({torch::randn({B, T, D}, f) * (is_e74(cell) ? 1.0 : 3.0), torch::randn({B, T, D}, f)}, 2).to(dtype);
  in.w = torch::randn({P, D}, f) * 0.5;
  if (P > 0) in.w[0] += 1.0;  // gate biases around the spec's init
  in.h0 = torch::randn({B, D}, f);
  in.dy = torch::randn({B, T, D}, f).to(dtype);
  in.dh_T = torch::randn({B, D}, f);
  return in;
}

// Forward + backward of the scalar loss (y . dy) + (h_T . dh_T); returns y, h_T and every gradient.
std::vector<torch::Tensor> run(DiagCell cell, const Inputs& in, ops::Impl impl, bool use_dy = true, bool use_dh = true) {
  auto proj = in.proj.detach().clone().requires_grad_(true);
  auto w = in.w.detach().clone().requires_grad_(true);
  auto h0 = in.h0.detach().clone().requires_grad_(true);
  auto out = ops::gated_diag(cell, proj, w, h0, impl);
  auto loss = torch::zeros({}, in.w.options());
  if (use_dy) loss = loss + (out[0].to(in.w.scalar_type()) * in.dy.to(in.w.scalar_type())).sum();
  if (use_dh) loss = loss + (out[1] * in.dh_T).sum();
  loss.backward();
  // The E74 cells have no parameters: w is [0,D] and the reference, which never reads it, leaves no gradient.
  auto dw = w.numel() == 0 ? torch::zeros_like(w) : w.grad();
  return {out[0], out[1], proj.grad(), dw, h0.grad()};
}

double sig(double x) { return 1 / (1 + std::exp(-x)); }

// Kernel vs reference on {y, h_T, dproj, dw, dh0} from run(), all but dw (whose shape depends on the cell).
// fp32: same math in a different order (fast-math exp); bf16: outputs rounded to bf16 on both sides.
void expect_kernel_close(const std::vector<torch::Tensor>& ref, const std::vector<torch::Tensor>& got,
                         torch::Dtype dtype) {
  const bool f32 = dtype == torch::kFloat;
  expect_close("y", ref[0], got[0], f32 ? 1e-5 : 5e-3);
  expect_close("h_T", ref[1], got[1], 1e-5);
  expect_close("dproj", ref[2], got[2], f32 ? 1e-5 : 1e-2);
  expect_close("dh0", ref[4], got[4], f32 ? 1e-5 : 1e-2);
}
}  // namespace

TEST_CASE("gated_diag_reference follows each cell's recurrence by hand", "[gated_diag]") {
  // One channel, one step from h' = 0.3 with a = 0.5, p = -1.0 and parameters w = (0.1, -0.2, 0.7, 0.4).
  const double hp = 0.3, a = 0.5, p = -1.0, w0 = 0.1, w1 = -0.2, w2 = 0.7, w3 = 0.4;
  for (auto cell : kCells) {
    const auto P = static_cast<int64_t>(ops::diag_cell_info(cell).params.size());
    auto proj = torch::tensor({a, p}, torch::kDouble).view({1, 1, 2});
    auto w = torch::tensor({w0, w1, w2, w3}, torch::kDouble).narrow(0, 0, P).view({P, 1});
    auto out = ops::gated_diag_reference(cell, proj, w, torch::tensor({{hp}}, torch::kDouble));
    double h = 0;
    switch (cell) {
      case DiagCell::E61: h = sig(a + w0) * hp + (1 - sig(a + w0)) * (p + w1); break;
      case DiagCell::E62: h = (1 - sig(a + w0)) * hp + sig(a + w0) * std::tanh(p + w1); break;
      case DiagCell::E64: h = sig(a + w0) * hp + (1 - sig(a + w0)) * std::tanh(hp + p + w1); break;
      case DiagCell::E65: h = sig(a + w0) * hp + (1 - sig(a + w0)) * std::tanh(w2 * hp + p + w1); break;
      case DiagCell::E67: h = sig(a + w2 * hp + w0) * hp + (1 - sig(a + w2 * hp + w0)) * std::tanh(p + w1); break;
      case DiagCell::E68: h = sig(a + w0) * hp + (1 - sig(a + w0)) * std::tanh(p + w1) * sig(w2 * hp + w3); break;
      case DiagCell::E74DeltaTanh: h = std::tanh(hp * (1 - a * a) + p * a); break;
      case DiagCell::E74SimpleTanh: h = std::tanh(0.9 * hp + p * a); break;
      case DiagCell::E74SimpleLinear: h = 0.9 * hp + p * a; break;
    }
    INFO(ops::diag_cell_info(cell).name);
    CHECK(std::abs(out[1][0][0].item<double>() - h) < 1e-12);
    CHECK(std::abs(out[0][0][0][0].item<double>() - h * h * sig(h)) < 1e-12);
  }
}

TEST_CASE("gated_diag_reference E74 diagonal cells equal an element-by-element fp64 loop", "[gated_diag]") {
  const int64_t B = 2, T = 7, n = 3;
  for (auto cell : kE74Cells) {
    torch::manual_seed(6);
    auto in = make_inputs(cell, B, T, n, torch::kDouble, torch::kCPU);
    in.h0 = in.h0.to(torch::kDouble);
    auto out = ops::gated_diag_reference(cell, in.proj, in.w.to(torch::kDouble), in.h0);
    auto proj = in.proj.accessor<double, 3>();
    auto y = out[0].accessor<double, 3>();
    INFO(ops::diag_cell_info(cell).name);
    double max_err = 0;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t i = 0; i < n; ++i) {
        double s = in.h0[b][i].item<double>();
        for (int64_t t = 0; t < T; ++t) {
          const double k = proj[b][t][i], v = proj[b][t][n + i];
          const double pre = (cell == DiagCell::E74DeltaTanh ? (1 - k * k) : 0.9) * s + v * k;
          s = cell == DiagCell::E74SimpleLinear ? pre : std::tanh(pre);
          max_err = std::max(max_err, std::abs(y[b][t][i] - s * s * sig(s)));
        }
        max_err = std::max(max_err, std::abs(out[1][b][i].item<double>() - s));
      }
    }
    CHECK(max_err < 1e-12);
  }
}

TEST_CASE("gated_diag_reference: T steps at once equal T1 then T-T1 with the carried state", "[gated_diag]") {
  for (auto cell : kCells) {
    torch::manual_seed(7);
    auto in = make_inputs(cell, 2, 11, 5, torch::kDouble, torch::kCPU);
    auto whole = ops::gated_diag_reference(cell, in.proj, in.w, in.h0);
    auto first = ops::gated_diag_reference(cell, in.proj.narrow(1, 0, 4), in.w, in.h0);
    auto second = ops::gated_diag_reference(cell, in.proj.narrow(1, 4, 7), in.w, first[1]);
    const std::string name = ops::diag_cell_info(cell).name;
    expect_close(name + " y (split, reference)", whole[0], torch::cat({first[0], second[0]}, 1), 1e-12);
    expect_close(name + " h_T (split, reference)", whole[1], second[1], 1e-12);
  }
}

TEST_CASE("gated_diag_reference gradients match finite differences in fp64", "[gated_diag]") {
  for (auto cell : kCells) {
    torch::manual_seed(0);
    auto in = make_inputs(cell, 2, 5, 3, torch::kDouble, torch::kCPU);
    for (auto* t : {&in.w, &in.h0, &in.dh_T}) *t = t->to(torch::kDouble);
    auto g = run(cell, in, ops::Impl::Reference);
    auto loss = [&] {
      auto out = ops::gated_diag_reference(cell, in.proj, in.w, in.h0);
      return (out[0] * in.dy).sum() + (out[1] * in.dh_T).sum();
    };
    const std::string name = ops::diag_cell_info(cell).name;
    expect_close(name + " dproj (fd)", test::numeric_grad(loss, in.proj), g[2], 1e-7);
    expect_close(name + " dw (fd)", test::numeric_grad(loss, in.w), g[3], 1e-7);
    expect_close(name + " dh0 (fd)", test::numeric_grad(loss, in.h0), g[4], 1e-7);
  }
}

TEST_CASE("asking for the gated_diag kernel where it cannot run is an error", "[gated_diag]") {
  auto in = make_inputs(DiagCell::E61, 1, 3, 4, torch::kFloat, torch::kCPU);
  try {
    ops::gated_diag(DiagCell::E61, in.proj, in.w, in.h0, ops::Impl::Kernel);
    FAIL("the kernel ran on CPU tensors");
  } catch (const c10::Error& e) {
    CHECK(std::string(e.what_without_backtrace()).find("CUDA") != std::string::npos);
  }
}

TEST_CASE("gated_diag kernel matches the reference: forward and every gradient", "[gated_diag][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto cell = GENERATE(DiagCell::E61, DiagCell::E62, DiagCell::E64, DiagCell::E65, DiagCell::E67, DiagCell::E68);
  const auto T = GENERATE(1, 63, 257);
  const auto B = GENERATE(1, 3);
  const auto D = GENERATE(37, 100);
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const std::string name = std::string(ops::diag_cell_info(cell).name) + "-B" + std::to_string(B) + "-T" +
                           std::to_string(T) + "-D" + std::to_string(D) + (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(T * 100 + B * 10 + D);
    auto in = make_inputs(cell, B, T, D, dtype, torch::kCUDA);
    auto ref = run(cell, in, ops::Impl::Reference);
    auto got = run(cell, in, ops::Impl::Kernel);
    expect_kernel_close(ref, got, dtype);
    expect_close("dw", ref[3], got[3], dtype == torch::kFloat ? 1e-5 : 1e-2);
  }
}

TEST_CASE("gated_diag kernel matches the reference for the E74 diagonal cells at every n_state", "[gated_diag][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto cell = GENERATE(DiagCell::E74DeltaTanh, DiagCell::E74SimpleTanh, DiagCell::E74SimpleLinear);
  const auto T = GENERATE(1, 63, 257);
  const auto B = GENERATE(1, 3);
  const auto n = GENERATE(1, 7, 16, 96, 100);
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const std::string name = std::string(ops::diag_cell_info(cell).name) + "-B" + std::to_string(B) + "-T" +
                           std::to_string(T) + "-n" + std::to_string(n) + (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(T * 1000 + B * 100 + n);
    auto in = make_inputs(cell, B, T, n, dtype, torch::kCUDA);
    auto ref = run(cell, in, ops::Impl::Reference);
    auto got = run(cell, in, ops::Impl::Kernel);
    expect_kernel_close(ref, got, dtype);
    CHECK(got[3].sizes() == torch::IntArrayRef({0, n}));  // no per-channel parameters
  }
}

TEST_CASE("gated_diag kernel gradients with only y or only h_T in the loss", "[gated_diag][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto cell : kCells) {
    torch::manual_seed(3);
    auto in = make_inputs(cell, 3, 65, 33, torch::kFloat, torch::kCUDA);
    for (bool use_dy : {true, false}) {
      auto ref = run(cell, in, ops::Impl::Reference, use_dy, !use_dy);
      auto got = run(cell, in, ops::Impl::Kernel, use_dy, !use_dy);
      const std::string tag = std::string(ops::diag_cell_info(cell).name) + (use_dy ? " (y only)" : " (h_T only)");
      for (int i = 2; i < 5; ++i) expect_close("grad " + std::to_string(i) + " " + tag, ref[i], got[i], 1e-5);
    }
  }
}

TEST_CASE("gated_diag kernel takes non-contiguous input", "[gated_diag][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(4);
  auto in = make_inputs(DiagCell::E68, 2, 40, 50, torch::kFloat, torch::kCUDA);
  auto wide = torch::randn({2, 40, 130}, in.proj.options());
  wide.narrow(2, 15, 100).copy_(in.proj);
  Inputs strided = in;
  strided.proj = wide.narrow(2, 15, 100);
  REQUIRE(!strided.proj.is_contiguous());
  auto ref = run(DiagCell::E68, in, ops::Impl::Reference);
  auto got = run(DiagCell::E68, strided, ops::Impl::Kernel);
  for (int i = 0; i < 5; ++i) expect_close("strided out/grad " + std::to_string(i), ref[i], got[i], 1e-5);
}

TEST_CASE("gated_diag kernel: T steps at once equal T1 then T-T1 with the carried state", "[gated_diag][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto cell : kCells) {
    torch::manual_seed(5);
    auto in = make_inputs(cell, 3, 100, 70, torch::kFloat, torch::kCUDA);
    auto whole = ops::gated_diag(cell, in.proj, in.w, in.h0, ops::Impl::Kernel);
    auto first = ops::gated_diag(cell, in.proj.narrow(1, 0, 37), in.w, in.h0, ops::Impl::Kernel);
    auto second = ops::gated_diag(cell, in.proj.narrow(1, 37, 63), in.w, first[1], ops::Impl::Kernel);
    const std::string name = ops::diag_cell_info(cell).name;
    expect_close(name + " y (split)", whole[0], torch::cat({first[0], second[0]}, 1), 1e-6);
    expect_close(name + " h_T (split)", whole[1], second[1], 1e-6);
  }
}
