// E61 scan: the reference against hand arithmetic and finite differences (CPU), and the CUDA kernel
// against the reference, forward and every gradient, over awkward shapes (GPU).
#include <cmath>

#include "ops/e61/e61.h"
#include "ops/e61/reference.h"
#include "tests/support/catch.h"
#include "tests/support/expect_close.h"

using namespace elman;
using test::expect_close;

namespace {
struct Inputs {
  torch::Tensor proj, b_alpha, b_v, h0, dy, dh_T;
};

// Random inputs; gate pre-activations spread so alpha covers (0, 1) from near 0 to near 1.
Inputs make_inputs(int64_t B, int64_t T, int64_t D, torch::Dtype dtype, torch::Device dev) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  Inputs in;
  auto a = torch::randn({B, T, D}, f) * 3.0;
  auto v = torch::randn({B, T, D}, f);
  in.proj = torch::cat({a, v}, 2).to(dtype);
  in.b_alpha = torch::randn({D}, f) + 1.0;
  in.b_v = torch::randn({D}, f) * 0.1;
  in.h0 = torch::randn({B, D}, f);
  in.dy = torch::randn({B, T, D}, f).to(dtype);
  in.dh_T = torch::randn({B, D}, f);
  return in;
}

// Forward + backward of the scalar loss (y . dy) + (h_T . dh_T); returns y, h_T and every gradient.
std::vector<torch::Tensor> run(const Inputs& in, ops::Impl impl, bool use_dy = true, bool use_dh = true) {
  auto proj = in.proj.detach().clone().requires_grad_(true);
  auto ba = in.b_alpha.detach().clone().requires_grad_(true);
  auto bv = in.b_v.detach().clone().requires_grad_(true);
  auto h0 = in.h0.detach().clone().requires_grad_(true);
  auto out = ops::e61(proj, ba, bv, h0, impl);
  auto loss = torch::zeros({}, in.b_alpha.options());
  if (use_dy) loss = loss + (out[0].to(torch::kFloat) * in.dy.to(torch::kFloat)).sum();
  if (use_dh) loss = loss + (out[1] * in.dh_T).sum();
  loss.backward();
  return {out[0], out[1], proj.grad(), ba.grad(), bv.grad(), h0.grad()};
}
}  // namespace

TEST_CASE("e61_reference follows the recurrence by hand", "[e61]") {
  // B=1, T=2, D=1: alpha_t = sigmoid(a_t + ba), h_t = alpha h + (1 - alpha) (p_t + bv), y = h^2 sigmoid(h).
  auto proj = torch::tensor({0.5, -1.0, 0.25, 2.0}, torch::kDouble).view({1, 2, 2});  // step t: [a_t, p_t]
  auto ba = torch::tensor({0.1}, torch::kDouble), bv = torch::tensor({-0.2}, torch::kDouble);
  auto h0 = torch::tensor({{0.3}}, torch::kDouble);
  auto out = ops::e61_reference(proj, ba, bv, h0);
  auto sig = [](double x) { return 1 / (1 + std::exp(-x)); };
  double h = 0.3;
  const double a[2] = {0.5, 0.25}, p[2] = {-1.0, 2.0};
  for (int t = 0; t < 2; ++t) {
    const double al = sig(a[t] + 0.1);
    h = al * h + (1 - al) * (p[t] - 0.2);
    CHECK(std::abs(out[0][0][t][0].item<double>() - h * h * sig(h)) < 1e-12);
  }
  CHECK(std::abs(out[1][0][0].item<double>() - h) < 1e-12);
}

TEST_CASE("e61_reference gradients match finite differences in fp64", "[e61]") {
  torch::manual_seed(0);
  auto in = make_inputs(2, 5, 3, torch::kDouble, torch::kCPU);
  for (auto* t : {&in.b_alpha, &in.b_v, &in.h0, &in.dh_T}) *t = t->to(torch::kDouble);
  auto g = run(in, ops::Impl::Reference);
  auto loss = [&] {
    auto out = ops::e61_reference(in.proj, in.b_alpha, in.b_v, in.h0);
    return (out[0] * in.dy).sum() + (out[1] * in.dh_T).sum();
  };
  expect_close("dproj (fd)", test::numeric_grad(loss, in.proj), g[2], 1e-7);
  expect_close("db_alpha (fd)", test::numeric_grad(loss, in.b_alpha), g[3], 1e-7);
  expect_close("db_v (fd)", test::numeric_grad(loss, in.b_v), g[4], 1e-7);
  expect_close("dh0 (fd)", test::numeric_grad(loss, in.h0), g[5], 1e-7);
}

TEST_CASE("asking for the e61 kernel where it cannot run is an error", "[e61]") {
  auto in = make_inputs(1, 3, 4, torch::kFloat, torch::kCPU);
  try {
    ops::e61(in.proj, in.b_alpha, in.b_v, in.h0, ops::Impl::Kernel);
    FAIL("the kernel ran on CPU tensors");
  } catch (const c10::Error& e) {
    CHECK(std::string(e.what_without_backtrace()).find("CUDA") != std::string::npos);
  }
}

TEST_CASE("e61 kernel matches the reference: forward and every gradient", "[e61][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto T = GENERATE(1, 63, 257);
  const auto B = GENERATE(1, 3);
  const auto D = GENERATE(37, 100);
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const std::string name = "B" + std::to_string(B) + "-T" + std::to_string(T) + "-D" + std::to_string(D) +
                           (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(T * 100 + B * 10 + D);
    auto in = make_inputs(B, T, D, dtype, torch::kCUDA);
    auto ref = run(in, ops::Impl::Reference);
    auto got = run(in, ops::Impl::Kernel);
    const bool f32 = dtype == torch::kFloat;
    // fp32: same math in a different order (fast-math exp); bf16: outputs rounded to bf16 on both sides.
    expect_close("y", ref[0], got[0], f32 ? 1e-5 : 5e-3);
    expect_close("h_T", ref[1], got[1], 1e-5);
    expect_close("dproj", ref[2], got[2], f32 ? 1e-5 : 1e-2);
    expect_close("db_alpha", ref[3], got[3], f32 ? 1e-5 : 1e-2);
    expect_close("db_v", ref[4], got[4], f32 ? 1e-5 : 1e-2);
    expect_close("dh0", ref[5], got[5], f32 ? 1e-5 : 1e-2);
  }
}

TEST_CASE("e61 kernel gradients with only y or only h_T in the loss", "[e61][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(3);
  auto in = make_inputs(3, 65, 33, torch::kFloat, torch::kCUDA);
  for (bool use_dy : {true, false}) {
    auto ref = run(in, ops::Impl::Reference, use_dy, !use_dy);
    auto got = run(in, ops::Impl::Kernel, use_dy, !use_dy);
    const std::string tag = use_dy ? " (y only)" : " (h_T only)";
    for (int i = 2; i < 6; ++i) expect_close("grad " + std::to_string(i) + tag, ref[i], got[i], 1e-5);
  }
}

TEST_CASE("e61 kernel takes non-contiguous input", "[e61][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(4);
  auto in = make_inputs(2, 40, 50, torch::kFloat, torch::kCUDA);
  auto wide = torch::randn({2, 40, 130}, in.proj.options());
  wide.narrow(2, 15, 100).copy_(in.proj);
  Inputs strided = in;
  strided.proj = wide.narrow(2, 15, 100);
  REQUIRE(!strided.proj.is_contiguous());
  auto ref = run(in, ops::Impl::Reference);
  auto got = run(strided, ops::Impl::Kernel);
  for (int i = 0; i < 6; ++i) expect_close("strided out/grad " + std::to_string(i), ref[i], got[i], 1e-5);
}

TEST_CASE("e61 kernel: T steps at once equal T1 then T-T1 with the carried state", "[e61][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(5);
  auto in = make_inputs(3, 100, 70, torch::kFloat, torch::kCUDA);
  auto whole = ops::e61(in.proj, in.b_alpha, in.b_v, in.h0, ops::Impl::Kernel);
  auto first = ops::e61(in.proj.narrow(1, 0, 37), in.b_alpha, in.b_v, in.h0, ops::Impl::Kernel);
  auto second = ops::e61(in.proj.narrow(1, 37, 63), in.b_alpha, in.b_v, first[1], ops::Impl::Kernel);
  expect_close("y (split)", whole[0], torch::cat({first[0], second[0]}, 1), 1e-6);
  expect_close("h_T (split)", whole[1], second[1], 1e-6);
}
