// Delta-rule matrix-state cells (E75 multi-head, E74 full matrix): the reference against an independent
// scalar computation and finite differences (CPU), and the CUDA kernel against the reference, forward and
// every gradient, over every padded layout of n_state and awkward T, B, H (GPU).
#include <cmath>

#include "ops/delta_matrix/delta_matrix.h"
#include "ops/delta_matrix/reference.h"
#include "tests/support/catch.h"
#include "tests/support/expect_close.h"
#include "tests/support/op_checks.h"

using namespace elman;
using test::expect_close;
using test::grad_of;
using test::leaf;
using test::require_error;

namespace {
struct Inputs {
  int64_t H = 1, n = 1;
  torch::Tensor proj, b_beta, S0, dy, dS_T;  // b_beta undefined for the ungated cell (E74)
};

// Random inputs: k, v, q ~ N(0, 1); gate pre-activations b~ ~ N(0, 1) around b_beta ~ 2 + N(0, 0.5), so beta
// covers roughly (0.5, 1); S0 in the range tanh keeps the state in.
Inputs make_inputs(bool gated, int64_t B, int64_t T, int64_t H, int64_t n, torch::Dtype dtype, torch::Device dev) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  Inputs in;
  in.H = H, in.n = n;
  in.proj = torch::randn({B, T, H * (gated ? 4 : 3) * n}, f).to(dtype);
  if (gated) in.b_beta = 2.0 + 0.5 * torch::randn({H, n}, f);
  in.S0 = 0.3 * torch::randn({B, H, n, n}, f);
  in.dy = torch::randn({B, T, H * n}, f).to(dtype);
  in.dS_T = torch::randn({B, H, n, n}, f);
  return in;
}

Inputs to_double(Inputs in) {
  for (auto* t : {&in.proj, &in.b_beta, &in.S0, &in.dy, &in.dS_T})
    if (t->defined()) *t = t->to(torch::kDouble);
  return in;
}

// Forward + backward of the scalar loss (y . dy) + (S_T . dS_T); returns {y, S_T, dproj, db_beta, dS0}
// (db_beta undefined for the ungated cell, dS0 undefined when in.S0 is).
std::vector<torch::Tensor> run(const Inputs& in, ops::Impl impl, bool use_dy = true, bool use_dS_T = true) {
  auto proj = leaf(in.proj), b_beta = leaf(in.b_beta), S0 = leaf(in.S0);
  auto out = ops::delta_matrix(proj, b_beta, S0, in.H, in.n, impl);
  const auto lt = in.dS_T.scalar_type();
  auto loss = torch::zeros({}, in.dS_T.options());
  if (use_dy) loss = loss + (out[0].to(lt) * in.dy.to(lt)).sum();
  if (use_dS_T) loss = loss + (out[1].to(lt) * in.dS_T).sum();
  loss.backward();
  return {out[0], out[1], proj.grad(), grad_of(b_beta), grad_of(S0)};
}

const std::vector<std::string> kNames = {"y", "S_T", "dproj", "db_beta", "dS0"};

void expect_all_close(const std::string& tag, const std::vector<torch::Tensor>& ref,
                      const std::vector<torch::Tensor>& got, double ratio) {
  test::expect_all_close(tag, kNames, ref, got, ratio);
}

double sig(double x) { return 1 / (1 + std::exp(-x)); }
}  // namespace

TEST_CASE("delta_matrix_reference follows the recurrence computed element by element", "[delta_matrix]") {
  for (bool gated : {true, false}) {
    INFO((gated ? "gated" : "ungated"));
    torch::manual_seed(gated ? 1 : 2);
    const int64_t B = 2, T = 4, H = 2, n = 3, P = gated ? 4 : 3;
    auto in = to_double(make_inputs(gated, B, T, H, n, torch::kDouble, torch::kCPU));
    auto out = ops::delta_matrix_reference(in.proj, in.b_beta, in.S0, H, n);
    auto pr = in.proj.accessor<double, 3>();
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        double S[3][3];
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j) S[i][j] = in.S0[b][h][i][j].item<double>();
        for (int64_t t = 0; t < T; ++t) {
          const int64_t o = h * P * n;
          double k[3], v[3], q[3], beta[3], norm = 0;
          for (int i = 0; i < n; ++i) {
            k[i] = pr[b][t][o + i], v[i] = pr[b][t][o + n + i], q[i] = pr[b][t][o + 2 * n + i];
            beta[i] = gated ? sig(pr[b][t][o + 3 * n + i] + in.b_beta[h][i].item<double>()) : 1.0;
            norm += k[i] * k[i];
          }
          norm = std::sqrt(norm);
          double kh[3], r[3] = {0, 0, 0}, Sn[3][3];
          for (int j = 0; j < n; ++j) kh[j] = k[j] / (norm + 1e-6);
          for (int i = 0; i < n; ++i)
            for (int j = 0; j < n; ++j) r[i] += S[i][j] * kh[j];
          for (int i = 0; i < n; ++i)
            for (int j = 0; j < n; ++j) Sn[i][j] = std::tanh(beta[i] * S[i][j] + (v[i] - r[i]) * kh[j]);
          for (int i = 0; i < n; ++i) {
            double u = 0;
            for (int j = 0; j < n; ++j) S[i][j] = Sn[i][j], u += Sn[i][j] * q[j];
            CHECK(std::abs(out[0][b][t][h * n + i].item<double>() - u * u * sig(u)) < 1e-12);
          }
        }
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j) CHECK(std::abs(out[1][b][h][i][j].item<double>() - S[i][j]) < 1e-12);
      }
    }
  }
}

TEST_CASE("delta_matrix_reference gradients match finite differences in fp64", "[delta_matrix]") {
  for (bool gated : {true, false}) {
    torch::manual_seed(gated ? 3 : 4);
    auto in = to_double(make_inputs(gated, 2, 4, gated ? 2 : 1, 3, torch::kDouble, torch::kCPU));
    auto g = run(in, ops::Impl::Reference);
    auto loss = [&] {
      auto out = ops::delta_matrix_reference(in.proj, in.b_beta, in.S0, in.H, in.n);
      return (out[0] * in.dy).sum() + (out[1] * in.dS_T).sum();
    };
    const std::string name = gated ? "gated" : "ungated";
    expect_close(name + " dproj (fd)", test::numeric_grad(loss, in.proj), g[2], 1e-7);
    if (gated) expect_close(name + " db_beta (fd)", test::numeric_grad(loss, in.b_beta), g[3], 1e-7);
    expect_close(name + " dS0 (fd)", test::numeric_grad(loss, in.S0), g[4], 1e-7);
  }
}

TEST_CASE("delta_matrix_reference: T steps at once equal T1 then T-T1 with the carried state", "[delta_matrix]") {
  for (bool gated : {true, false}) {
    torch::manual_seed(5);
    auto in = to_double(make_inputs(gated, 3, 10, 2, 5, torch::kDouble, torch::kCPU));
    auto whole = ops::delta_matrix_reference(in.proj, in.b_beta, in.S0, 2, 5);
    auto first = ops::delta_matrix_reference(in.proj.narrow(1, 0, 4), in.b_beta, in.S0, 2, 5);
    auto second = ops::delta_matrix_reference(in.proj.narrow(1, 4, 6), in.b_beta, first[1], 2, 5);
    CHECK(torch::allclose(whole[0], torch::cat({first[0], second[0]}, 1), 0, 1e-13));
    CHECK(torch::allclose(whole[1], second[1], 0, 1e-13));
    // And with no initial state: zeros.
    auto none = ops::delta_matrix_reference(in.proj, in.b_beta, torch::Tensor(), 2, 5);
    auto zeros = ops::delta_matrix_reference(in.proj, in.b_beta, torch::zeros_like(in.S0), 2, 5);
    CHECK(torch::equal(none[0], zeros[0]));
    CHECK(none[1].scalar_type() == torch::kDouble);
  }
}

TEST_CASE("delta_matrix rejects n_state outside 1..64 and bad shapes", "[delta_matrix]") {
  auto in = make_inputs(true, 2, 3, 2, 4, torch::kFloat, torch::kCPU);
  for (auto impl : {ops::Impl::Reference, ops::Impl::Kernel}) {
    for (int64_t n : {0, 65, 100}) {
      auto bad = make_inputs(true, 1, 2, 1, std::max<int64_t>(n, 1), torch::kFloat, torch::kCPU);
      require_error([&] { ops::delta_matrix(bad.proj, bad.b_beta, bad.S0, 1, n, impl); },
                    "n_state " + std::to_string(n) + " is not supported; use an n_state from 1 to 64");
    }
  }
  const auto ref = ops::Impl::Reference;
  require_error([&] { ops::delta_matrix(in.proj, in.b_beta, in.S0, 3, 4, ref); }, "proj must be [B,T,48]");
  require_error([&] { ops::delta_matrix(in.proj, torch::Tensor(), in.S0, 2, 4, ref); }, "proj must be [B,T,24]");
  require_error([&] { ops::delta_matrix(in.proj, in.b_beta.narrow(1, 0, 3), in.S0, 2, 4, ref); }, "b_beta must be");
  require_error([&] { ops::delta_matrix(in.proj, in.b_beta, in.S0.narrow(3, 0, 3), 2, 4, ref); }, "S0 must be");
  auto out = ops::delta_matrix(in.proj.to(torch::kBFloat16), in.b_beta, torch::Tensor(), 2, 4, ref);
  CHECK(out[0].sizes() == torch::IntArrayRef({2, 3, 8}));
  CHECK(out[0].scalar_type() == torch::kBFloat16);
  CHECK(out[1].scalar_type() == torch::kFloat);
}

TEST_CASE("asking for the delta_matrix kernel where it cannot run is an error", "[delta_matrix]") {
  auto in = make_inputs(true, 1, 3, 1, 4, torch::kFloat, torch::kCPU);
  require_error([&] { ops::delta_matrix(in.proj, in.b_beta, in.S0, 1, 4, ops::Impl::Kernel); }, "CUDA");
}

TEST_CASE("delta_matrix kernel matches the reference: forward and every gradient", "[delta_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto n = GENERATE(1, 7, 16, 20, 24, 28, 32, 48, 64);
  const auto T = GENERATE(1, 63, 257);
  const auto B = GENERATE(1, 3);
  const auto H = GENERATE(1, 3);
  const auto gated = GENERATE(true, false);
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const std::string name = std::string(gated ? "e75" : "e74") + "-n" + std::to_string(n) + "-T" + std::to_string(T) +
                           "-B" + std::to_string(B) + "-H" + std::to_string(H) +
                           (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(n * 10000 + T * 10 + B * 3 + H + gated);
    auto in = make_inputs(gated, B, T, H, n, dtype, torch::kCUDA);
    auto ref = run(in, ops::Impl::Reference);
    auto got = run(in, ops::Impl::Kernel);
    // fp32: the same fp32 math in another order (fmaf, shuffle-tree sums). bf16: both sides read the same bf16
    // inputs and round y and dproj to bf16.
    expect_all_close(name, ref, got, dtype == torch::kFloat ? 1e-4 : 1e-2);
  }
}

TEST_CASE("delta_matrix kernel gradients with only y or only S_T in the loss, and no S0", "[delta_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (bool gated : {true, false}) {
    torch::manual_seed(6);
    auto in = make_inputs(gated, 3, 70, 2, 24, torch::kFloat, torch::kCUDA);
    for (bool use_dy : {true, false}) {
      auto ref = run(in, ops::Impl::Reference, use_dy, !use_dy);
      auto got = run(in, ops::Impl::Kernel, use_dy, !use_dy);
      expect_all_close(std::string(gated ? "e75" : "e74") + (use_dy ? " (y only)" : " (S_T only)"), ref, got, 1e-4);
    }
    in.S0 = torch::Tensor();
    expect_all_close(std::string(gated ? "e75" : "e74") + " (no S0)", run(in, ops::Impl::Reference),
                     run(in, ops::Impl::Kernel), 1e-4);
  }
}

TEST_CASE("delta_matrix kernel takes non-contiguous proj and incoming gradient", "[delta_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(7);
  auto in = make_inputs(true, 2, 40, 2, 16, torch::kFloat, torch::kCUDA);
  auto wide = torch::randn({2, 40, 200}, in.proj.options());
  wide.narrow(2, 30, 128).copy_(in.proj);
  Inputs strided = in;
  strided.proj = wide.narrow(2, 30, 128);
  strided.dy = in.dy.transpose(1, 2).contiguous().transpose(1, 2);
  REQUIRE(!strided.proj.is_contiguous());
  REQUIRE(!strided.dy.is_contiguous());
  expect_all_close("strided", run(in, ops::Impl::Reference), run(strided, ops::Impl::Kernel), 1e-4);
}

TEST_CASE("delta_matrix kernel with zero keys (the norm's eps path)", "[delta_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (bool gated : {true, false}) {
    torch::manual_seed(8);
    auto in = make_inputs(gated, 2, 33, 2, 20, torch::kFloat, torch::kCUDA);
    auto p = in.proj.view({2, 33, 2, gated ? 4 : 3, 20});
    p.select(1, 0).select(2, 0).zero_();   // k = 0 at t = 0 for both heads
    p.select(1, 17).select(2, 0).zero_();  // and at t = 17
    expect_all_close(std::string(gated ? "e75" : "e74") + " zero k", run(in, ops::Impl::Reference),
                     run(in, ops::Impl::Kernel), 1e-4);
  }
}

TEST_CASE("delta_matrix kernel: T steps at once equal T1 then T-T1 with the carried state", "[delta_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (int64_t n : {8, 32, 64}) {
    torch::manual_seed(9);
    auto in = make_inputs(true, 3, 100, 2, n, torch::kFloat, torch::kCUDA);
    auto whole = ops::delta_matrix(in.proj, in.b_beta, in.S0, 2, n, ops::Impl::Kernel);
    auto first = ops::delta_matrix(in.proj.narrow(1, 0, 37), in.b_beta, in.S0, 2, n, ops::Impl::Kernel);
    auto second = ops::delta_matrix(in.proj.narrow(1, 37, 63), in.b_beta, first[1], 2, n, ops::Impl::Kernel);
    const std::string name = "n" + std::to_string(n);
    expect_close(name + " y (split)", whole[0], torch::cat({first[0], second[0]}, 1), 1e-6);
    expect_close(name + " S_T (split)", whole[1], second[1], 1e-6);
  }
}

TEST_CASE("delta_matrix kernel at the 100M shapes over a long sequence", "[delta_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (bool gated : {true, false}) {
    torch::manual_seed(10);
    // E75h4n32 and E74 n32 at batch 4 (of 32), T = 1024: long enough for drift between the two to show.
    auto in = make_inputs(gated, 4, 1024, gated ? 4 : 1, 32, torch::kBFloat16, torch::kCUDA);
    expect_all_close(std::string(gated ? "E75h4n32" : "E74n32") + " T1024", run(in, ops::Impl::Reference),
                     run(in, ops::Impl::Kernel), 1e-2);
  }
}

TEST_CASE("delta_matrix kernel rejects n_state 65 on CUDA tensors", "[delta_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  auto in = make_inputs(true, 1, 4, 1, 65, torch::kFloat, torch::kCUDA);
  require_error([&] { ops::delta_matrix(in.proj, in.b_beta, in.S0, 1, 65, ops::Impl::Kernel); },
                "n_state 65 is not supported");
}
