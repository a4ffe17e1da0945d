// Dense Elman recurrence: the reference against hand arithmetic and finite differences (CPU), and the
// CUDA kernel against the reference, forward and every gradient, over awkward shapes (GPU).
#include <cmath>
#include <cstdlib>
#include <string>

#include "ops/dense_elman/dense_elman.h"
#include "ops/dense_elman/reference.h"
#include "tests/support/catch.h"
#include "tests/support/expect_close.h"
#include "tests/support/op_checks.h"

using namespace elman;
using ops::DenseMode;
using test::expect_close;
using test::leaf;

namespace {
const std::vector<DenseMode> kModes = {DenseMode::Tanh, DenseMode::Linear, DenseMode::GatedTanh};

struct Inputs {
  torch::Tensor pre, W, apre, h0, dh, dh_T;  // apre undefined unless GatedTanh
};

// Random inputs. W ~ xavier-normal x 0.5 (std 0.5 / sqrt(D)): spectral radius about 0.5, so Linear and Tanh
// states stay in range over long T; gate pre-activations spread so alpha covers (0, 1).
Inputs make_inputs(DenseMode mode, int64_t B, int64_t T, int64_t D, torch::Dtype dtype, torch::Device dev) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  Inputs in;
  in.pre = torch::randn({B, T, D}, f).to(dtype);
  in.W = torch::randn({D, D}, f) * (0.5 / std::sqrt(static_cast<double>(D)));
  if (mode == DenseMode::GatedTanh) in.apre = (torch::randn({B, T, D}, f) * 2.0).to(dtype);
  in.h0 = torch::randn({B, D}, f) * 0.5;
  in.dh = torch::randn({B, T, D}, f).to(dtype);
  in.dh_T = torch::randn({B, D}, f);
  return in;
}

Inputs to_double(Inputs in) {
  for (auto* t : {&in.pre, &in.W, &in.apre, &in.h0, &in.dh, &in.dh_T})
    if (t->defined()) *t = t->to(torch::kDouble);
  return in;
}

// Forward + backward of the scalar loss (h . dh) + (h_T . dh_T); returns {h, h_T, dpre, dW, dapre, dh0}
// (dapre undefined unless GatedTanh; dh0 undefined when in.h0 is).
std::vector<torch::Tensor> run(DenseMode mode, const Inputs& in, ops::Impl impl, bool use_dh = true,
                               bool use_dh_T = true) {
  auto pre = leaf(in.pre), W = leaf(in.W), apre = leaf(in.apre), h0 = leaf(in.h0);
  auto out = ops::dense_elman(pre, W, apre, h0, mode, impl);
  const auto lt = in.dh_T.scalar_type();
  auto loss = torch::zeros({}, in.dh_T.options());
  if (use_dh) loss = loss + (out[0].to(lt) * in.dh.to(lt)).sum();
  if (use_dh_T) loss = loss + (out[1].to(lt) * in.dh_T).sum();
  loss.backward();
  auto grad = [](const torch::Tensor& t) { return t.defined() ? t.grad() : torch::Tensor(); };
  return {out[0], out[1], pre.grad(), W.grad(), grad(apre), grad(h0)};
}

const std::vector<std::string> kNames = {"h", "h_T", "dpre", "dW", "dapre", "dh0"};

void expect_all_close(const std::string& tag, const std::vector<torch::Tensor>& ref,
                      const std::vector<torch::Tensor>& got, double ratio) {
  test::expect_all_close(tag, kNames, ref, got, ratio);
}

double sig(double x) { return 1 / (1 + std::exp(-x)); }
}  // namespace

TEST_CASE("dense_elman_reference follows the recurrence by hand", "[dense_elman]") {
  // B=1, T=2, D=2.
  const double pre[2][2] = {{0.5, -0.3}, {0.1, 0.8}};
  const double apre[2][2] = {{0.3, -1.0}, {2.0, 0.5}};
  const double W[2][2] = {{0.2, -0.4}, {0.7, 0.1}};
  const double h0[2] = {0.6, -0.2};
  auto tpre = torch::tensor({0.5, -0.3, 0.1, 0.8}, torch::kDouble).view({1, 2, 2});
  auto tapre = torch::tensor({0.3, -1.0, 2.0, 0.5}, torch::kDouble).view({1, 2, 2});
  auto tW = torch::tensor({0.2, -0.4, 0.7, 0.1}, torch::kDouble).view({2, 2});
  auto th0 = torch::tensor({0.6, -0.2}, torch::kDouble).view({1, 2});
  for (auto mode : kModes) {
    INFO(ops::dense_mode_name(mode));
    const bool gated = mode == DenseMode::GatedTanh;
    auto out = ops::dense_elman_reference(tpre, tW, gated ? tapre : torch::Tensor(), th0, mode);
    double h[2] = {h0[0], h0[1]};
    for (int t = 0; t < 2; ++t) {
      double hn[2];
      for (int j = 0; j < 2; ++j) {
        const double z = pre[t][j] + W[j][0] * h[0] + W[j][1] * h[1];
        switch (mode) {
          case DenseMode::Tanh: hn[j] = std::tanh(z); break;
          case DenseMode::Linear: hn[j] = z; break;
          case DenseMode::GatedTanh: hn[j] = sig(apre[t][j]) * h[j] + (1 - sig(apre[t][j])) * std::tanh(z); break;
        }
      }
      for (int j = 0; j < 2; ++j) {
        h[j] = hn[j];
        CHECK(std::abs(out[0][0][t][j].item<double>() - h[j]) < 1e-12);
      }
    }
    for (int j = 0; j < 2; ++j) CHECK(std::abs(out[1][0][j].item<double>() - h[j]) < 1e-12);
  }
}

TEST_CASE("dense_elman_reference gradients match finite differences in fp64", "[dense_elman]") {
  for (auto mode : kModes) {
    torch::manual_seed(0);
    auto in = to_double(make_inputs(mode, 2, 4, 3, torch::kDouble, torch::kCPU));
    in.W = in.W * 2.0;  // a larger W so the products matter in the gradients
    auto g = run(mode, in, ops::Impl::Reference);
    auto loss = [&] {
      auto out = ops::dense_elman_reference(in.pre, in.W, in.apre, in.h0, mode);
      return (out[0] * in.dh).sum() + (out[1] * in.dh_T).sum();
    };
    const std::string name = ops::dense_mode_name(mode);
    expect_close(name + " dpre (fd)", test::numeric_grad(loss, in.pre), g[2], 1e-7);
    expect_close(name + " dW (fd)", test::numeric_grad(loss, in.W), g[3], 1e-7);
    if (mode == DenseMode::GatedTanh) expect_close(name + " dapre (fd)", test::numeric_grad(loss, in.apre), g[4], 1e-7);
    expect_close(name + " dh0 (fd)", test::numeric_grad(loss, in.h0), g[5], 1e-7);
  }
}

TEST_CASE("dense_elman_reference rejects bad arguments", "[dense_elman]") {
  auto in = make_inputs(DenseMode::GatedTanh, 2, 3, 4, torch::kFloat, torch::kCPU);
  CHECK_THROWS(ops::dense_elman_reference(in.pre, in.W, torch::Tensor(), in.h0, DenseMode::GatedTanh));
  CHECK_THROWS(ops::dense_elman_reference(in.pre, in.W, in.apre, in.h0, DenseMode::Tanh));
  CHECK_THROWS(ops::dense_elman_reference(in.pre, in.W.narrow(0, 0, 3), torch::Tensor(), in.h0, DenseMode::Tanh));
  CHECK_THROWS(ops::dense_elman_reference(in.pre, in.W, torch::Tensor(), in.h0.narrow(1, 0, 3), DenseMode::Linear));
  auto out = ops::dense_elman_reference(in.pre, in.W, torch::Tensor(), torch::Tensor(), DenseMode::Tanh);
  CHECK(out[0].sizes() == in.pre.sizes());
  CHECK(out[1].scalar_type() == torch::kFloat);
}

TEST_CASE("asking for the dense_elman kernel where it cannot run is an error", "[dense_elman]") {
  auto in = make_inputs(DenseMode::Tanh, 1, 3, 4, torch::kFloat, torch::kCPU);
  try {
    ops::dense_elman(in.pre, in.W, torch::Tensor(), in.h0, DenseMode::Tanh, ops::Impl::Kernel);
    FAIL("the kernel ran on CPU tensors");
  } catch (const c10::Error& e) {
    CHECK(std::string(e.what_without_backtrace()).find("CUDA") != std::string::npos);
  }
}

TEST_CASE("dense_elman kernel matches the reference: forward and every gradient", "[dense_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto T = GENERATE(1, 63, 257);
  const auto B = GENERATE(1, 3);
  const auto D = GENERATE(37, 100, 300);
  const auto mode = GENERATE(DenseMode::Tanh, DenseMode::Linear, DenseMode::GatedTanh);
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const std::string name = "B" + std::to_string(B) + "-T" + std::to_string(T) + "-D" + std::to_string(D) + "-" +
                           ops::dense_mode_name(mode) + (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(T * 1000 + B * 100 + D + static_cast<int>(mode));
    auto in = make_inputs(mode, B, T, D, dtype, torch::kCUDA);
    auto ref = run(mode, in, ops::Impl::Reference);
    auto got = run(mode, in, ops::Impl::Kernel);
    // fp32: the same fp32 math summed in another order (~1e-6 seen per step, damped by the recurrence).
    // bf16: outputs rounded to bf16 on both sides, and the kernel's W h uses the bf16-rounded state.
    expect_all_close(name, ref, got, dtype == torch::kFloat ? 1e-4 : 1e-2);
  }
}

TEST_CASE("dense_elman kernel at the real width D=1280", "[dense_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto dtype : {torch::kFloat, torch::kBFloat16})
    for (auto mode : kModes) {
      torch::manual_seed(11);
      auto in = make_inputs(mode, 4, 32, 1280, dtype, torch::kCUDA);
      auto ref = run(mode, in, ops::Impl::Reference);
      auto got = run(mode, in, ops::Impl::Kernel);
      expect_all_close(std::string("D1280-") + ops::dense_mode_name(mode) + (dtype == torch::kFloat ? "-fp32" : "-bf16"),
                       ref, got, dtype == torch::kFloat ? 1e-4 : 1e-2);
    }
}

TEST_CASE("dense_elman kernel at D=1280 with the training batch, split into batch groups", "[dense_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  // bf16 on an H100: 48 rows per block, 4 groups of 27 blocks (B 32: 8 rows each; B 35: 9 + 9 + 9 + 8);
  // fp32: 10 rows per block, one group of 128 blocks, batch tiles of 32.
  for (int64_t B : {32, 35})
    for (auto dtype : {torch::kFloat, torch::kBFloat16})
      for (auto mode : kModes) {
        torch::manual_seed(13 + B);
        auto in = make_inputs(mode, B, 24, 1280, dtype, torch::kCUDA);
        auto ref = run(mode, in, ops::Impl::Reference);
        auto got = run(mode, in, ops::Impl::Kernel);
        expect_all_close("B" + std::to_string(B) + "-D1280-" + ops::dense_mode_name(mode) +
                             (dtype == torch::kFloat ? "-fp32" : "-bf16"),
                         ref, got, dtype == torch::kFloat ? 1e-4 : 1e-2);
      }
}

// Sets ELMAN_DENSE_ROWS (the kernels' rows per block) for one scope.
struct ForcedRows {
  explicit ForcedRows(int rows) { setenv("ELMAN_DENSE_ROWS", std::to_string(rows).c_str(), 1); }
  ~ForcedRows() { unsetenv("ELMAN_DENSE_ROWS"); }
  ForcedRows(const ForcedRows&) = delete;
  ForcedRows& operator=(const ForcedRows&) = delete;
};

TEST_CASE("dense_elman kernel: every bf16 product at widths near the 100M ones", "[dense_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  // Rows per block 16, 32, 48 at D 1270 and 1500 (neither a multiple of 16 nor of the rows) run all four products:
  // 48 rows keep 5 k-tiles per warp in registers (D 1270) or add a sixth from shared memory (D 1500, where two
  // warps' sixth k-tile lies past D).
  const auto D = GENERATE(1270, 1500);
  const auto rows = GENERATE(16, 32, 48);
  const auto mode = GENERATE(DenseMode::Tanh, DenseMode::Linear, DenseMode::GatedTanh);
  const std::string name =
      "D" + std::to_string(D) + "-R" + std::to_string(rows) + "-" + ops::dense_mode_name(mode) + "-bf16";
  SECTION(name) {
    torch::manual_seed(D + rows + static_cast<int>(mode));
    auto in = make_inputs(mode, 35, 24, D, torch::kBFloat16, torch::kCUDA);  // uneven batch groups
    auto ref = run(mode, in, ops::Impl::Reference);
    const ForcedRows forced(rows);
    auto got = run(mode, in, ops::Impl::Kernel);
    expect_all_close(name, ref, got, 1e-2);
  }
}

TEST_CASE("dense_elman kernel with more than one batch tile and no h0", "[dense_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto dtype : {torch::kFloat, torch::kBFloat16})
    for (auto mode : kModes) {
      torch::manual_seed(12);
      auto in = make_inputs(mode, 70, 20, 100, dtype, torch::kCUDA);  // batch tiles of 32, 32, 6
      in.h0 = torch::Tensor();
      auto ref = run(mode, in, ops::Impl::Reference);
      auto got = run(mode, in, ops::Impl::Kernel);
      expect_all_close(std::string("B70-") + ops::dense_mode_name(mode) + (dtype == torch::kFloat ? "-fp32" : "-bf16"),
                       ref, got, dtype == torch::kFloat ? 1e-4 : 1e-2);
    }
}

TEST_CASE("dense_elman kernel gradients with only h or only h_T in the loss", "[dense_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto mode : kModes) {
    torch::manual_seed(3);
    auto in = make_inputs(mode, 3, 65, 33, torch::kFloat, torch::kCUDA);
    for (bool use_dh : {true, false}) {
      auto ref = run(mode, in, ops::Impl::Reference, use_dh, !use_dh);
      auto got = run(mode, in, ops::Impl::Kernel, use_dh, !use_dh);
      expect_all_close(std::string(ops::dense_mode_name(mode)) + (use_dh ? " (h only)" : " (h_T only)"), ref, got,
                       1e-4);
    }
  }
}

TEST_CASE("dense_elman kernel takes non-contiguous pre and incoming gradient", "[dense_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(4);
  const auto mode = DenseMode::GatedTanh;
  auto in = make_inputs(mode, 2, 40, 50, torch::kFloat, torch::kCUDA);
  auto wide = torch::randn({2, 40, 130}, in.pre.options());
  wide.narrow(2, 15, 50).copy_(in.pre);
  Inputs strided = in;
  strided.pre = wide.narrow(2, 15, 50);
  strided.dh = in.dh.transpose(1, 2).contiguous().transpose(1, 2);  // same values, [B,D,T] storage
  REQUIRE(!strided.pre.is_contiguous());
  REQUIRE(!strided.dh.is_contiguous());
  auto ref = run(mode, in, ops::Impl::Reference);
  auto got = run(mode, strided, ops::Impl::Kernel);
  expect_all_close("strided", ref, got, 1e-4);
}

TEST_CASE("dense_elman kernel: T steps at once equal T1 then T-T1 with the carried state", "[dense_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto mode : kModes) {
    torch::manual_seed(5);
    auto in = make_inputs(mode, 3, 100, 70, torch::kFloat, torch::kCUDA);
    auto part = [&](int64_t t0, int64_t n) { return in.apre.defined() ? in.apre.narrow(1, t0, n) : torch::Tensor(); };
    auto whole = ops::dense_elman(in.pre, in.W, in.apre, in.h0, mode, ops::Impl::Kernel);
    auto first = ops::dense_elman(in.pre.narrow(1, 0, 37), in.W, part(0, 37), in.h0, mode, ops::Impl::Kernel);
    auto second = ops::dense_elman(in.pre.narrow(1, 37, 63), in.W, part(37, 63), first[1], mode, ops::Impl::Kernel);
    const std::string name = ops::dense_mode_name(mode);
    expect_close(name + " h (split)", whole[0], torch::cat({first[0], second[0]}, 1), 1e-6);
    expect_close(name + " h_T (split)", whole[1], second[1], 1e-6);
  }
}

TEST_CASE("dense_elman kernel at D=2000 with bf16 W and the D limit", "[dense_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(6);
  // 16 rows per block at D=2000 on an H100 (125 blocks), 8 k-tiles per warp in the bf16 MMA product.
  auto in = make_inputs(DenseMode::Tanh, 2, 5, 2000, torch::kBFloat16, torch::kCUDA);
  in.W = in.W.to(torch::kBFloat16);
  auto ref = run(DenseMode::Tanh, in, ops::Impl::Reference);
  auto got = run(DenseMode::Tanh, in, ops::Impl::Kernel);
  CHECK(got[3].scalar_type() == torch::kBFloat16);
  expect_all_close("D2000-bf16", ref, got, 1e-2);
  // Far past shared memory and co-residency: a clear error, not a launch failure.
  auto big = make_inputs(DenseMode::Tanh, 1, 2, 8192, torch::kFloat, torch::kCUDA);
  try {
    ops::dense_elman(big.pre, big.W, torch::Tensor(), big.h0, DenseMode::Tanh, ops::Impl::Kernel);
    FAIL("D=8192 ran");
  } catch (const c10::Error& e) {
    CHECK(std::string(e.what_without_backtrace()).find("D=8192") != std::string::npos);
  }
}
