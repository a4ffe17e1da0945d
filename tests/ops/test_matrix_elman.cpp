// Matrix-state Elman cells E70-E73: the reference against an independent scalar computation and finite
// differences (CPU), and the CUDA kernel against the reference, forward and every gradient, over every layout of
// n_state (1..128) and awkward T, B (GPU).
#include <algorithm>
#include <cmath>
#include <utility>

#include "ops/matrix_elman/matrix_elman.h"
#include "ops/matrix_elman/reference.h"
#include "tests/support/catch.h"
#include "tests/support/expect_close.h"
#include "tests/support/op_checks.h"

using namespace elman;
using ops::MatrixCell;
using test::expect_close;
using test::grad_of;
using test::leaf;
using test::require_error;

namespace {
const std::vector<MatrixCell> kCells = {MatrixCell::E70, MatrixCell::E71, MatrixCell::E72, MatrixCell::E73};
std::string name_of(MatrixCell cell) { return ops::matrix_cell_info(cell).name; }

struct Inputs {
  MatrixCell cell = MatrixCell::E70;
  int64_t n = 1;
  torch::Tensor proj, w, S0, dy, dS_T;
};

// Random inputs: v, a, z~ ~ N(0, 1); k, q ~ N(0, key_scale^2 / n), so with the default key_scale 1 the dots
// r = S k and u = S q stay O(|v|) and the gates cover their range; a larger key_scale saturates them (as
// unnormalised k can in the model). Per-row parameters scatter around the spec's init; E70's decay 0.9 +- 0.1
// with row 0 at 1.05, clamped to 0.999 (zero gradient). S0 ~ 0.3 N(0, 1).
Inputs make_inputs(MatrixCell cell, int64_t B, int64_t T, int64_t n, torch::Dtype dtype, torch::Device dev,
                   double key_scale = 1.0) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  const auto& info = ops::matrix_cell_info(cell);
  const int64_t P = info.projections, Pw = static_cast<int64_t>(info.params.size());
  Inputs in;
  in.cell = cell, in.n = n;
  auto scale = torch::ones({P, n}, f);
  scale[0].fill_(key_scale / std::sqrt(static_cast<double>(n)));
  scale[2].fill_(key_scale / std::sqrt(static_cast<double>(n)));
  in.proj = (torch::randn({B, T, P, n}, f) * scale).reshape({B, T, P * n}).to(dtype);
  in.w = torch::empty({Pw, n}, f);
  for (int64_t i = 0; i < Pw; ++i)
    in.w[i] = info.params[i].second + (cell == MatrixCell::E70 ? 0.1 : 0.3) * torch::randn({n}, f);
  if (cell == MatrixCell::E70) in.w[0][0] = 1.05;
  in.S0 = 0.3 * torch::randn({B, n, n}, f);
  in.dy = torch::randn({B, T, n}, f).to(dtype);
  in.dS_T = torch::randn({B, n, n}, f);
  return in;
}

Inputs to_double(Inputs in) {
  for (auto* t : {&in.proj, &in.w, &in.S0, &in.dy, &in.dS_T})
    if (t->defined()) *t = t->to(torch::kDouble);
  return in;
}

// Forward + backward of the scalar loss (y . dy) + (S_T . dS_T); returns {y, S_T, dproj, dw, dS0} (dS0 undefined
// when in.S0 is).
std::vector<torch::Tensor> run(const Inputs& in, ops::Impl impl, bool use_dy = true, bool use_dS_T = true) {
  auto proj = leaf(in.proj), w = leaf(in.w), S0 = leaf(in.S0);
  auto out = ops::matrix_elman(in.cell, proj, w, S0, in.n, impl);
  const auto lt = in.dS_T.scalar_type();
  auto loss = torch::zeros({}, in.dS_T.options());
  if (use_dy) loss = loss + (out[0].to(lt) * in.dy.to(lt)).sum();
  if (use_dS_T) loss = loss + (out[1].to(lt) * in.dS_T).sum();
  loss.backward();
  return {out[0], out[1], proj.grad(), w.grad(), grad_of(S0)};
}

void expect_all_close(const std::string& tag, const std::vector<torch::Tensor>& ref,
                      const std::vector<torch::Tensor>& got, double ratio) {
  test::expect_all_close(tag, {"y", "S_T", "dproj", "dw", "dS0"}, ref, got, ratio);
}

double sig(double x) { return 1 / (1 + std::exp(-x)); }

// {y [B,T,n], S_T [B,n,n]} element by element in double, straight from the recurrences in cells.h.
std::pair<torch::Tensor, torch::Tensor> scalar_loop(const Inputs& in) {
  const int64_t B = in.proj.size(0), T = in.proj.size(1), n = in.n;
  auto pr = in.proj.accessor<double, 3>();
  auto w = in.w.accessor<double, 2>();
  auto s0 = in.S0.accessor<double, 3>();
  auto y = torch::zeros({B, T, n}, torch::kDouble), S_T = torch::zeros({B, n, n}, torch::kDouble);
  auto ya = y.accessor<double, 3>();
  auto sa = S_T.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> S(n * n), Sn(n * n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) S[i * n + j] = s0[b][i][j];
    for (int64_t t = 0; t < T; ++t) {
      auto k = [&](int64_t j) { return pr[b][t][j]; };
      auto v = [&](int64_t i) { return pr[b][t][n + i]; };
      auto q = [&](int64_t j) { return pr[b][t][2 * n + j]; };
      auto a = [&](int64_t i) { return pr[b][t][3 * n + i]; };  // E73: z~ of column i
      for (int64_t i = 0; i < n; ++i) {
        double r = 0;
        for (int64_t j = 0; j < n; ++j) r += S[i * n + j] * k(j);
        for (int64_t j = 0; j < n; ++j) {
          const double s = S[i * n + j];
          double next = 0;
          switch (in.cell) {
            case MatrixCell::E70: next = std::min(std::max(w[0][i], 0.0), 0.999) * s + v(i) * k(j); break;
            case MatrixCell::E71: {
              const double al = sig(a(i) + w[1][i] * r + w[0][i]);
              next = al * s + (1 - al) * v(i) * k(j);
              break;
            }
            case MatrixCell::E72: {
              const double al = sig(a(i) + w[0][i]), g = sig(w[1][i] * r + w[2][i]);
              next = al * s + (1 - al) * v(i) * g * k(j);
              break;
            }
            case MatrixCell::E73: next = std::tanh(s * std::tanh(a(j) + w[0][j]) + v(i) * k(j)); break;
          }
          Sn[i * n + j] = next;
        }
      }
      S.swap(Sn);
      for (int64_t i = 0; i < n; ++i) {
        double u = 0;
        for (int64_t j = 0; j < n; ++j) u += S[i * n + j] * q(j);
        ya[b][t][i] = u * u * sig(u);
      }
    }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) sa[b][i][j] = S[i * n + j];
  }
  return {y, S_T};
}
}  // namespace

TEST_CASE("matrix_elman_reference follows the recurrence computed element by element", "[matrix_elman]") {
  for (auto cell : kCells) {
    INFO(name_of(cell));
    torch::manual_seed(1);
    auto in = to_double(make_inputs(cell, 2, 5, 3, torch::kDouble, torch::kCPU));
    auto out = ops::matrix_elman_reference(cell, in.proj, in.w, in.S0, in.n);
    auto [y, S_T] = scalar_loop(in);
    CHECK(torch::allclose(out[0], y, 0, 1e-12));
    CHECK(torch::allclose(out[1], S_T, 0, 1e-12));
  }
}

TEST_CASE("matrix_elman_reference gradients match finite differences in fp64", "[matrix_elman]") {
  for (auto cell : kCells) {
    torch::manual_seed(2);
    // Larger keys than the default so every gate moves well away from its init values.
    auto in = to_double(make_inputs(cell, 2, 4, 3, torch::kDouble, torch::kCPU, 2.0));
    auto g = run(in, ops::Impl::Reference);
    auto loss = [&] {
      auto out = ops::matrix_elman_reference(cell, in.proj, in.w, in.S0, in.n);
      return (out[0] * in.dy).sum() + (out[1] * in.dS_T).sum();
    };
    const std::string name = name_of(cell);
    expect_close(name + " dproj (fd)", test::numeric_grad(loss, in.proj), g[2], 1e-7);
    expect_close(name + " dw (fd)", test::numeric_grad(loss, in.w), g[3], 1e-7);
    expect_close(name + " dS0 (fd)", test::numeric_grad(loss, in.S0), g[4], 1e-7);
    if (cell == MatrixCell::E70) CHECK(g[3][0][0].item<double>() == 0.0);  // decay 1.05 is clamped to 0.999
  }
}

TEST_CASE("matrix_elman_reference: T steps at once equal T1 then T-T1 with the carried state", "[matrix_elman]") {
  for (auto cell : kCells) {
    INFO(name_of(cell));
    torch::manual_seed(3);
    auto in = to_double(make_inputs(cell, 3, 10, 5, torch::kDouble, torch::kCPU));
    auto whole = ops::matrix_elman_reference(cell, in.proj, in.w, in.S0, 5);
    auto first = ops::matrix_elman_reference(cell, in.proj.narrow(1, 0, 4), in.w, in.S0, 5);
    auto second = ops::matrix_elman_reference(cell, in.proj.narrow(1, 4, 6), in.w, first[1], 5);
    CHECK(torch::allclose(whole[0], torch::cat({first[0], second[0]}, 1), 0, 1e-13));
    CHECK(torch::allclose(whole[1], second[1], 0, 1e-13));
    // And with no initial state: zeros.
    auto none = ops::matrix_elman_reference(cell, in.proj, in.w, torch::Tensor(), 5);
    auto zeros = ops::matrix_elman_reference(cell, in.proj, in.w, torch::zeros_like(in.S0), 5);
    CHECK(torch::equal(none[0], zeros[0]));
    CHECK(none[1].scalar_type() == torch::kDouble);
  }
}

TEST_CASE("matrix_elman rejects n_state outside 1..128 and bad shapes", "[matrix_elman]") {
  for (auto impl : {ops::Impl::Reference, ops::Impl::Kernel}) {
    for (int64_t n : {0, 129, 200}) {
      auto bad = make_inputs(MatrixCell::E71, 1, 2, std::max<int64_t>(n, 1), torch::kFloat, torch::kCPU);
      require_error([&] { ops::matrix_elman(MatrixCell::E71, bad.proj, bad.w, bad.S0, n, impl); },
                    "e71: n_state " + std::to_string(n) + " is not supported; use an n_state from 1 to 128 (--nstate)");
    }
  }
  const auto ref = ops::Impl::Reference;
  auto in = make_inputs(MatrixCell::E72, 2, 3, 4, torch::kFloat, torch::kCPU);  // proj [2,3,16], w [3,4]
  require_error([&] { ops::matrix_elman(MatrixCell::E70, in.proj, in.w, in.S0, 4, ref); }, "e70: proj must be [B,T,12]");
  require_error([&] { ops::matrix_elman(MatrixCell::E72, in.proj, in.w, in.S0, 3, ref); }, "e72: proj must be [B,T,12]");
  require_error([&] { ops::matrix_elman(MatrixCell::E71, in.proj, in.w, in.S0, 4, ref); }, "e71: w must be a float [2,4]");
  require_error([&] { ops::matrix_elman(MatrixCell::E72, in.proj, in.w.narrow(1, 0, 3), in.S0, 4, ref); },
                "e72: w must be a float [3,4]");
  require_error([&] { ops::matrix_elman(MatrixCell::E72, in.proj, in.w, in.S0.narrow(2, 0, 3), 4, ref); },
                "e72: S0 must be a float [2,4,4]");
  auto out = ops::matrix_elman(MatrixCell::E72, in.proj.to(torch::kBFloat16), in.w, torch::Tensor(), 4, ref);
  CHECK(out[0].sizes() == torch::IntArrayRef({2, 3, 4}));
  CHECK(out[0].scalar_type() == torch::kBFloat16);
  CHECK(out[1].scalar_type() == torch::kFloat);
}

TEST_CASE("asking for the matrix_elman kernel where it cannot run is an error", "[matrix_elman]") {
  auto in = make_inputs(MatrixCell::E73, 1, 3, 4, torch::kFloat, torch::kCPU);
  require_error([&] { ops::matrix_elman(MatrixCell::E73, in.proj, in.w, in.S0, 4, ops::Impl::Kernel); }, "CUDA");
}

TEST_CASE("matrix_elman kernel matches the reference: forward and every gradient", "[matrix_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto cell = GENERATE(MatrixCell::E70, MatrixCell::E71, MatrixCell::E72, MatrixCell::E73);
  // Every layout (J = 1..4 columns per lane) with its padding, and the 100M n_state 96.
  const auto n = GENERATE(1, 7, 16, 20, 24, 28, 32, 48, 64, 96, 100, 128);
  // (T, B) paired rather than crossed: one step, a partial last segment, many segments with a partial tail.
  const auto TB = GENERATE(std::make_pair(1, 3), std::make_pair(63, 1), std::make_pair(257, 3));
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const int64_t T = TB.first, B = TB.second;
  const std::string name = name_of(cell) + "-n" + std::to_string(n) + "-T" + std::to_string(T) + "-B" +
                           std::to_string(B) + (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(n * 10000 + T * 10 + B + static_cast<int>(cell));
    auto in = make_inputs(cell, B, T, n, dtype, torch::kCUDA);
    // fp32: the same fp32 math in another order (fmaf, shuffle-tree and atomic sums). bf16: both sides read the
    // same bf16 inputs and round y and dproj to bf16.
    expect_all_close(name, run(in, ops::Impl::Reference), run(in, ops::Impl::Kernel),
                     dtype == torch::kFloat ? 1e-4 : 1e-2);
  }
}

TEST_CASE("matrix_elman kernel gradients with only y or only S_T in the loss, and no S0", "[matrix_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto cell : kCells) {
    torch::manual_seed(4);
    auto in = make_inputs(cell, 3, 70, 24, torch::kFloat, torch::kCUDA);
    for (bool use_dy : {true, false}) {
      auto ref = run(in, ops::Impl::Reference, use_dy, !use_dy);
      auto got = run(in, ops::Impl::Kernel, use_dy, !use_dy);
      expect_all_close(name_of(cell) + (use_dy ? " (y only)" : " (S_T only)"), ref, got, 1e-4);
    }
    in.S0 = torch::Tensor();
    expect_all_close(name_of(cell) + " (no S0)", run(in, ops::Impl::Reference), run(in, ops::Impl::Kernel), 1e-4);
  }
}

TEST_CASE("matrix_elman kernel with saturated gates (unnormalised keys)", "[matrix_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto cell : kCells) {
    torch::manual_seed(5);
    // k, q ~ N(0, 1) at n 96 (|k| ~ 10): r = S k reaches tens, so E71's alpha and E72's g sit near 0 or 1.
    auto in = make_inputs(cell, 2, 100, 96, torch::kFloat, torch::kCUDA, std::sqrt(96.0));
    expect_all_close(name_of(cell) + " saturated", run(in, ops::Impl::Reference), run(in, ops::Impl::Kernel), 1e-4);
  }
}

TEST_CASE("matrix_elman kernel takes non-contiguous proj and incoming gradient", "[matrix_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto cell : kCells) {
    torch::manual_seed(6);
    auto in = make_inputs(cell, 2, 40, 20, torch::kFloat, torch::kCUDA);
    const int64_t width = in.proj.size(2);
    auto wide = torch::randn({2, 40, width + 50}, in.proj.options());
    wide.narrow(2, 30, width).copy_(in.proj);
    Inputs strided = in;
    strided.proj = wide.narrow(2, 30, width);
    strided.dy = in.dy.transpose(1, 2).contiguous().transpose(1, 2);
    REQUIRE(!strided.proj.is_contiguous());
    REQUIRE(!strided.dy.is_contiguous());
    expect_all_close(name_of(cell) + " strided", run(in, ops::Impl::Reference), run(strided, ops::Impl::Kernel), 1e-4);
  }
}

TEST_CASE("matrix_elman kernel: T steps at once equal T1 then T-T1 with the carried state", "[matrix_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto cell : kCells) {
    for (int64_t n : {8, 40, 96, 128}) {
      torch::manual_seed(7);
      auto in = make_inputs(cell, 3, 100, n, torch::kFloat, torch::kCUDA);
      const auto K = ops::Impl::Kernel;
      auto whole = ops::matrix_elman(cell, in.proj, in.w, in.S0, n, K);
      auto first = ops::matrix_elman(cell, in.proj.narrow(1, 0, 37), in.w, in.S0, n, K);
      auto second = ops::matrix_elman(cell, in.proj.narrow(1, 37, 63), in.w, first[1], n, K);
      const std::string name = name_of(cell) + " n" + std::to_string(n);
      expect_close(name + " y (split)", whole[0], torch::cat({first[0], second[0]}, 1), 1e-6);
      expect_close(name + " S_T (split)", whole[1], second[1], 1e-6);
    }
  }
}

TEST_CASE("matrix_elman kernel forward is bitwise repeatable", "[matrix_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto cell : kCells) {
    torch::manual_seed(8);
    auto in = make_inputs(cell, 2, 50, 96, torch::kFloat, torch::kCUDA);
    auto a = ops::matrix_elman(cell, in.proj, in.w, in.S0, 96, ops::Impl::Kernel);
    auto b = ops::matrix_elman(cell, in.proj, in.w, in.S0, 96, ops::Impl::Kernel);
    INFO(name_of(cell));
    CHECK(torch::equal(a[0], b[0]));
    CHECK(torch::equal(a[1], b[1]));
  }
}

TEST_CASE("matrix_elman kernel at the 100M shape over a long sequence", "[matrix_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto cell : kCells) {
    torch::manual_seed(9);
    // n_state 96 at batch 4 (of 32), T = 1024: long enough for drift between the two to show.
    auto in = make_inputs(cell, 4, 1024, 96, torch::kBFloat16, torch::kCUDA);
    expect_all_close(name_of(cell) + " n96 T1024", run(in, ops::Impl::Reference), run(in, ops::Impl::Kernel), 1e-2);
  }
}

TEST_CASE("matrix_elman kernel rejects n_state 129 on CUDA tensors", "[matrix_elman][gpu]") {
  REQUIRE(torch::cuda::is_available());
  auto in = make_inputs(MatrixCell::E70, 1, 4, 129, torch::kFloat, torch::kCUDA);
  require_error([&] { ops::matrix_elman(MatrixCell::E70, in.proj, in.w, in.S0, 129, ops::Impl::Kernel); },
                "n_state 129 is not supported");
}
