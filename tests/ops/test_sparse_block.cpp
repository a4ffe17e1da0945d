// E87 sparse block memory: the reference against an independent scalar computation and finite differences
// (CPU), the routing's deterministic top-K, argument errors, and the CUDA scan kernel against the reference,
// forward and every gradient, for block counts up to 32 and top-K up to 32 over every padded layout of n_state
// (GPU).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "ops/sparse_block/reference.h"
#include "ops/sparse_block/sparse_block.h"
#include "tests/support/catch.h"
#include "tests/support/expect_close.h"
#include "tests/support/op_checks.h"

using namespace elman;
using test::expect_close;
using test::grad_of;
using test::leaf;
using test::require_error;
using test::expect_all_close;

namespace {
struct Inputs {
  int64_t nb = 1, K = 1, n = 1;
  torch::Tensor proj, b_beta, S0, dy, dS_T;
};

// Random inputs: k, v, b~, q ~ N(0, 1), router logits ~ N(0, 1); b_beta ~ 2 + N(0, 0.5); S0 in tanh's range.
Inputs make_inputs(int64_t B, int64_t T, int64_t nb, int64_t K, int64_t n, torch::Dtype dtype, torch::Device dev) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  Inputs in;
  in.nb = nb, in.K = K, in.n = n;
  in.proj = torch::randn({B, T, nb * 3 * n + n + nb}, f).to(dtype);
  in.b_beta = 2.0 + 0.5 * torch::randn({nb, n}, f);
  in.S0 = 0.3 * torch::randn({B, nb, n, n}, f);
  in.dy = torch::randn({B, T, n}, f).to(dtype);
  in.dS_T = torch::randn({B, nb, n, n}, f);
  return in;
}

Inputs to_double(Inputs in) {
  for (auto* t : {&in.proj, &in.b_beta, &in.S0, &in.dy, &in.dS_T})
    if (t->defined()) *t = t->to(torch::kDouble);
  return in;
}

// Forward + backward of the scalar loss (y . dy) + (S_T . dS_T); returns {y, S_T, dproj, db_beta, dS0}.
std::vector<torch::Tensor> run(const Inputs& in, ops::Impl impl, bool use_dy = true, bool use_dS_T = true) {
  auto proj = leaf(in.proj), b_beta = leaf(in.b_beta), S0 = leaf(in.S0);
  auto out = ops::sparse_block(proj, b_beta, S0, in.nb, in.K, in.n, impl);
  const auto lt = in.dS_T.scalar_type();
  auto loss = torch::zeros({}, in.dS_T.options());
  if (use_dy) loss = loss + (out[0].to(lt) * in.dy.to(lt)).sum();
  if (use_dS_T) loss = loss + (out[1].to(lt) * in.dS_T).sum();
  loss.backward();
  return {out[0], out[1], proj.grad(), grad_of(b_beta), grad_of(S0)};
}

// The scan alone with dense update weights w: inputs and {yb, S_T, dscan_proj, db_beta, dw, dS0}.
struct ScanInputs {
  int64_t nb = 1, n = 1;
  torch::Tensor sp, b_beta, w, S0, dyb, dS_T;
};

// w uniform in [0, 1] with some exact 0 (a block not written) and 1 (fully replaced) entries.
ScanInputs make_scan_inputs(int64_t B, int64_t T, int64_t nb, int64_t n, torch::Dtype dtype, torch::Device dev) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  ScanInputs in;
  in.nb = nb, in.n = n;
  in.sp = torch::randn({B, T, nb * 4 * n}, f).to(dtype);
  in.b_beta = 2.0 + 0.5 * torch::randn({nb, n}, f);
  auto u = torch::rand({B, T, nb}, f);
  in.w = torch::where(u < 0.15, torch::zeros_like(u), torch::where(u > 0.9, torch::ones_like(u), u));
  in.S0 = 0.3 * torch::randn({B, nb, n, n}, f);
  in.dyb = torch::randn({B, T, nb * n}, f).to(dtype);
  in.dS_T = torch::randn({B, nb, n, n}, f);
  return in;
}

std::vector<torch::Tensor> run_scan(const ScanInputs& in, ops::Impl impl) {
  auto sp = leaf(in.sp), b_beta = leaf(in.b_beta), w = leaf(in.w), S0 = leaf(in.S0);
  auto out = ops::sparse_block_scan(sp, b_beta, w, S0, in.nb, in.n, impl);
  const auto lt = in.dS_T.scalar_type();
  ((out[0].to(lt) * in.dyb.to(lt)).sum() + (out[1].to(lt) * in.dS_T).sum()).backward();
  return {out[0], out[1], sp.grad(), b_beta.grad(), w.grad(), S0.grad()};
}

const std::vector<std::string> kNames = {"y", "S_T", "dproj", "db_beta", "dS0"};
const std::vector<std::string> kScanNames = {"yb", "S_T", "dscan_proj", "db_beta", "dw", "dS0"};

double sig(double x) { return 1 / (1 + std::exp(-x)); }
}  // namespace

TEST_CASE("sparse_block_reference follows the routing and recurrence computed element by element", "[sparse_block]") {
  torch::manual_seed(1);
  constexpr int64_t B = 2, T = 5, nb = 5, n = 3;
  for (int64_t K : {1, 2, 5}) {
    INFO("top_k " << K);
    auto in = to_double(make_inputs(B, T, nb, K, n, torch::kDouble, torch::kCPU));
    const int64_t lo = nb * 3 * n + n;  // router logits' offset
    in.proj[0][1].narrow(0, lo, nb).fill_(0.5);                   // all five tied
    in.proj[1][2].narrow(0, lo, nb).copy_(torch::tensor({0.1, 2.0, 0.3, 2.0, 2.0}, torch::kDouble));  // 1, 3, 4 tied
    auto out = ops::sparse_block_reference(in.proj, in.b_beta, in.S0, nb, K, n);
    auto pr = in.proj.accessor<double, 3>();
    for (int64_t b = 0; b < B; ++b) {
      double S[nb][n][n];
      for (int j = 0; j < nb; ++j)
        for (int i = 0; i < n; ++i)
          for (int c = 0; c < n; ++c) S[j][i][c] = in.S0[b][j][i][c].item<double>();
      for (int64_t t = 0; t < T; ++t) {
        // Routing: rho over all blocks; w over the K largest logits (ties: lower index first), renormalised.
        double l[nb], rho[nb], w[nb] = {}, mx = -1e300, z = 0, zk = 0;
        for (int j = 0; j < nb; ++j) l[j] = pr[b][t][lo + j], mx = std::max(mx, l[j]);
        for (int j = 0; j < nb; ++j) rho[j] = std::exp(l[j] - mx), z += rho[j];
        for (int j = 0; j < nb; ++j) rho[j] /= z;
        int order[nb];
        std::iota(order, order + nb, 0);
        std::stable_sort(order, order + nb, [&](int a, int c) { return l[a] > l[c]; });
        for (int m = 0; m < K; ++m) w[order[m]] = std::exp(l[order[m]] - mx), zk += w[order[m]];
        for (int j = 0; j < nb; ++j) w[j] /= zk;
        double q[n], y[n] = {};
        for (int c = 0; c < n; ++c) q[c] = pr[b][t][nb * 3 * n + c];
        for (int j = 0; j < nb; ++j) {
          const int64_t o = j * 3 * n;
          double k[n], v[n], beta[n], norm = 0;
          for (int i = 0; i < n; ++i) {
            k[i] = pr[b][t][o + i], v[i] = pr[b][t][o + n + i];
            beta[i] = sig(pr[b][t][o + 2 * n + i] + in.b_beta[j][i].item<double>());
            norm += k[i] * k[i];
          }
          norm = std::sqrt(norm);
          double kh[n], r[n] = {}, Sn[n][n];
          for (int c = 0; c < n; ++c) kh[c] = k[c] / (norm + 1e-6);
          for (int i = 0; i < n; ++i)
            for (int c = 0; c < n; ++c) r[i] += S[j][i][c] * kh[c];
          for (int i = 0; i < n; ++i)
            for (int c = 0; c < n; ++c) {
              const double P = std::tanh(beta[i] * S[j][i][c] + (v[i] - r[i]) * kh[c]);
              Sn[i][c] = (1 - w[j]) * S[j][i][c] + w[j] * P;
            }
          for (int i = 0; i < n; ++i) {
            double u = 0;
            for (int c = 0; c < n; ++c) S[j][i][c] = Sn[i][c], u += Sn[i][c] * q[c];
            y[i] += rho[j] * u * u * sig(u);
          }
        }
        for (int i = 0; i < n; ++i) CHECK(std::abs(out[0][b][t][i].item<double>() - y[i]) < 1e-12);
      }
      for (int j = 0; j < nb; ++j)
        for (int i = 0; i < n; ++i)
          for (int c = 0; c < n; ++c) CHECK(std::abs(out[1][b][j][i][c].item<double>() - S[j][i][c]) < 1e-12);
    }
  }
}

TEST_CASE("sparse_block_routing: top-K by rank with ties to the lower index, any K up to 32 blocks", "[sparse_block]") {
  auto l = torch::tensor({1.0, 3.0, 3.0, -1.0, 3.0, 0.0}, torch::kDouble).view({1, 1, 6});
  auto r = ops::sparse_block_routing(l, 2);
  auto w = r[1].view(-1);
  CHECK(w[0].item<double>() == 0);
  CHECK(std::abs(w[1].item<double>() - 0.5) < 1e-12);
  CHECK(std::abs(w[2].item<double>() - 0.5) < 1e-12);
  CHECK(w[4].item<double>() == 0);  // tied with 1 and 2, but a higher index
  CHECK(torch::allclose(r[0], torch::softmax(l, -1)));
  torch::manual_seed(2);
  auto big = torch::randn({3, 7, 32}, torch::kDouble);
  for (int64_t K : {1, 8, 9, 16, 31, 32}) {
    INFO("K " << K);
    auto rw = ops::sparse_block_routing(big, K);
    auto nz = (rw[1] > 0).sum(-1);
    CHECK(torch::equal(nz, torch::full_like(nz, K)));
    CHECK(torch::allclose(rw[1].sum(-1), torch::ones({3, 7}, torch::kDouble)));
    // The selected blocks are the K largest: the smallest selected logit beats the largest unselected one.
    auto sel = rw[1] > 0;
    auto min_sel = big.masked_fill(sel.logical_not(), 1e9).amin(-1);
    auto max_out = big.masked_fill(sel, -1e9).amax(-1);
    CHECK((min_sel > max_out).all().item<bool>());
  }
  CHECK(torch::allclose(ops::sparse_block_routing(big, 32)[1], torch::softmax(big, -1)));
}

TEST_CASE("sparse_block_reference gradients match finite differences in fp64", "[sparse_block]") {
  for (int64_t K : {1, 2, 4}) {
    torch::manual_seed(3 + K);
    auto in = to_double(make_inputs(2, 3, 4, K, 2, torch::kDouble, torch::kCPU));
    auto g = run(in, ops::Impl::Reference);
    auto loss = [&] {
      auto out = ops::sparse_block_reference(in.proj, in.b_beta, in.S0, in.nb, in.K, in.n);
      return (out[0] * in.dy).sum() + (out[1] * in.dS_T).sum();
    };
    const std::string name = "top" + std::to_string(K);
    // The router's logits get gradient through both softmaxes (the top-K mask is constant).
    auto dlogits = g[2].narrow(2, 4 * 3 * 2 + 2, 4);
    CHECK(dlogits.abs().max().item<double>() > 1e-3);
    expect_close(name + " dproj (fd)", test::numeric_grad(loss, in.proj), g[2], 1e-7);
    expect_close(name + " db_beta (fd)", test::numeric_grad(loss, in.b_beta), g[3], 1e-7);
    expect_close(name + " dS0 (fd)", test::numeric_grad(loss, in.S0), g[4], 1e-7);
  }
  // The scan alone with dense w: dw included.
  torch::manual_seed(9);
  auto s = make_scan_inputs(2, 3, 3, 2, torch::kDouble, torch::kCPU);
  for (auto* t : {&s.b_beta, &s.w, &s.S0, &s.dS_T}) *t = t->to(torch::kDouble);
  s.dyb = s.dyb.to(torch::kDouble);
  auto g = run_scan(s, ops::Impl::Reference);
  auto loss = [&] {
    auto out = ops::sparse_block_scan_reference(s.sp, s.b_beta, s.w, s.S0, s.nb, s.n);
    return (out[0] * s.dyb).sum() + (out[1] * s.dS_T).sum();
  };
  expect_close("scan dscan_proj (fd)", test::numeric_grad(loss, s.sp), g[2], 1e-7);
  expect_close("scan dw (fd)", test::numeric_grad(loss, s.w), g[4], 1e-7);
}

TEST_CASE("sparse_block_reference: T steps at once equal T1 then T-T1 with the carried state", "[sparse_block]") {
  torch::manual_seed(5);
  auto in = to_double(make_inputs(3, 10, 6, 3, 5, torch::kDouble, torch::kCPU));
  auto whole = ops::sparse_block_reference(in.proj, in.b_beta, in.S0, 6, 3, 5);
  auto first = ops::sparse_block_reference(in.proj.narrow(1, 0, 4), in.b_beta, in.S0, 6, 3, 5);
  auto second = ops::sparse_block_reference(in.proj.narrow(1, 4, 6), in.b_beta, first[1], 6, 3, 5);
  CHECK(torch::allclose(whole[0], torch::cat({first[0], second[0]}, 1), 0, 1e-13));
  CHECK(torch::allclose(whole[1], second[1], 0, 1e-13));
  auto none = ops::sparse_block_reference(in.proj, in.b_beta, torch::Tensor(), 6, 3, 5);
  auto zeros = ops::sparse_block_reference(in.proj, in.b_beta, torch::zeros_like(in.S0), 6, 3, 5);
  CHECK(torch::equal(none[0], zeros[0]));
  CHECK(none[1].scalar_type() == torch::kDouble);
}

TEST_CASE("sparse_block rejects bad blocks, top_k, n_state and shapes", "[sparse_block]") {
  for (auto impl : {ops::Impl::Reference, ops::Impl::Kernel}) {
    for (int64_t nb : {0, 33, 64}) {
      auto bad = make_inputs(1, 2, std::max<int64_t>(nb, 1), 1, 4, torch::kFloat, torch::kCPU);
      require_error([&] { ops::sparse_block(bad.proj, bad.b_beta, bad.S0, nb, 1, 4, impl); },
                    "blocks " + std::to_string(nb) + " is not supported; use --blocks from 1 to 32");
    }
    for (int64_t K : {0, 9, 20}) {
      auto bad = make_inputs(1, 2, 8, 1, 4, torch::kFloat, torch::kCPU);
      require_error([&] { ops::sparse_block(bad.proj, bad.b_beta, bad.S0, 8, K, 4, impl); },
                    "top_k " + std::to_string(K) + " is not supported with 8 blocks; use --topk from 1 to the block count 8");
    }
    for (int64_t n : {0, 65, 100}) {
      auto bad = make_inputs(1, 2, 2, 1, std::max<int64_t>(n, 1), torch::kFloat, torch::kCPU);
      require_error([&] { ops::sparse_block(bad.proj, bad.b_beta, bad.S0, 2, 1, n, impl); },
                    "n_state " + std::to_string(n) + " is not supported; use an n_state from 1 to 64");
    }
  }
  const auto ref = ops::Impl::Reference;
  auto in = make_inputs(2, 3, 4, 2, 3, torch::kFloat, torch::kCPU);
  require_error([&] { ops::sparse_block(in.proj, in.b_beta, in.S0, 5, 2, 3, ref); }, "proj must be [B,T,53]");
  require_error([&] { ops::sparse_block(in.proj, in.b_beta.narrow(1, 0, 2), in.S0, 4, 2, 3, ref); }, "b_beta must be");
  require_error([&] { ops::sparse_block(in.proj, in.b_beta, in.S0.narrow(3, 0, 2), 4, 2, 3, ref); }, "S0 must be");
  auto out = ops::sparse_block(in.proj.to(torch::kBFloat16), in.b_beta, torch::Tensor(), 4, 2, 3, ref);
  CHECK(out[0].sizes() == torch::IntArrayRef({2, 3, 3}));
  CHECK(out[0].scalar_type() == torch::kBFloat16);
  CHECK(out[1].sizes() == torch::IntArrayRef({2, 4, 3, 3}));
  CHECK(out[1].scalar_type() == torch::kFloat);
}

TEST_CASE("asking for the sparse_block kernel where it cannot run is an error", "[sparse_block]") {
  auto in = make_inputs(1, 3, 4, 2, 4, torch::kFloat, torch::kCPU);
  require_error([&] { ops::sparse_block(in.proj, in.b_beta, in.S0, 4, 2, 4, ops::Impl::Kernel); }, "CUDA");
  auto s = make_scan_inputs(1, 3, 4, 4, torch::kFloat, torch::kCPU);
  require_error([&] { ops::sparse_block_scan(s.sp, s.b_beta, s.w, s.S0, 4, 4, ops::Impl::Kernel); }, "CUDA");
}

TEST_CASE("sparse_block kernel matches the reference: forward and every gradient", "[sparse_block][gpu]") {
  REQUIRE(torch::cuda::is_available());
  using BK = std::pair<int, int>;  // (blocks, top_k)
  const auto bk = GENERATE(values<BK>({{4, 1}, {4, 4}, {8, 3}, {16, 4}, {32, 8}, {32, 16}, {32, 32}}));
  const auto n = GENERATE(1, 7, 16, 20, 24, 28, 32, 48, 64);
  using TB = std::pair<int64_t, int64_t>;  // (T, B): odd lengths, one and several sequences
  const auto tb = GENERATE(values<TB>({{1, 3}, {63, 1}, {257, 3}}));
  const int64_t T = tb.first, B = tb.second;
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const std::string name = "b" + std::to_string(bk.first) + "k" + std::to_string(bk.second) + "-n" +
                           std::to_string(n) + "-T" + std::to_string(T) + "-B" + std::to_string(B) +
                           (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(n * 100000 + T * 100 + B * 7 + bk.first + bk.second);
    auto in = make_inputs(B, T, bk.first, bk.second, n, dtype, torch::kCUDA);
    // fp32: the same fp32 math in another order. bf16: both sides read the same bf16 inputs and round the
    // per-block outputs and gradients to bf16 at the same points.
    expect_all_close(name, kNames, run(in, ops::Impl::Reference), run(in, ops::Impl::Kernel),
                     dtype == torch::kFloat ? 1e-4 : 1e-2);
  }
}

TEST_CASE("sparse_block scan kernel with dense update weights: forward and every gradient, dw included",
          "[sparse_block][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto n = GENERATE(1, 7, 16, 24, 32, 48, 64);
  const auto T = GENERATE(1, 63, 257);
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const std::string name = "scan-n" + std::to_string(n) + "-T" + std::to_string(T) +
                           (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(n * 1000 + T);
    auto in = make_scan_inputs(3, T, 5, n, dtype, torch::kCUDA);
    expect_all_close(name, kScanNames, run_scan(in, ops::Impl::Reference), run_scan(in, ops::Impl::Kernel),
                     dtype == torch::kFloat ? 1e-4 : 1e-2);
  }
}

TEST_CASE("sparse_block kernel gradients with only y or only S_T in the loss, and no S0", "[sparse_block][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(6);
  auto in = make_inputs(3, 70, 8, 3, 24, torch::kFloat, torch::kCUDA);
  for (bool use_dy : {true, false}) {
    auto ref = run(in, ops::Impl::Reference, use_dy, !use_dy);
    auto got = run(in, ops::Impl::Kernel, use_dy, !use_dy);
    expect_all_close(use_dy ? "y only" : "S_T only", kNames, ref, got, 1e-4);
  }
  in.S0 = torch::Tensor();
  expect_all_close("no S0", kNames, run(in, ops::Impl::Reference), run(in, ops::Impl::Kernel), 1e-4);
}

TEST_CASE("sparse_block kernel with zero keys (the norm's eps path)", "[sparse_block][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(8);
  auto in = make_inputs(2, 33, 4, 2, 20, torch::kFloat, torch::kCUDA);
  auto kvb = in.proj.narrow(2, 0, 4 * 3 * 20).view({2, 33, 4, 3, 20});
  kvb.select(1, 0).select(2, 0).zero_();   // k = 0 at t = 0 for every block
  kvb.select(1, 17).select(2, 0).zero_();  // and at t = 17
  expect_all_close("zero k", kNames, run(in, ops::Impl::Reference), run(in, ops::Impl::Kernel), 1e-4);
}

TEST_CASE("sparse_block kernel: T steps at once equal T1 then T-T1 with the carried state", "[sparse_block][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (int64_t n : {8, 16, 32, 64}) {
    torch::manual_seed(9);
    auto in = make_inputs(3, 100, 16, 4, n, torch::kFloat, torch::kCUDA);
    const auto k = ops::Impl::Kernel;
    auto whole = ops::sparse_block(in.proj, in.b_beta, in.S0, 16, 4, n, k);
    auto first = ops::sparse_block(in.proj.narrow(1, 0, 37), in.b_beta, in.S0, 16, 4, n, k);
    auto second = ops::sparse_block(in.proj.narrow(1, 37, 63), in.b_beta, first[1], 16, 4, n, k);
    const std::string name = "n" + std::to_string(n);
    expect_close(name + " y (split)", whole[0], torch::cat({first[0], second[0]}, 1), 1e-6);
    expect_close(name + " S_T (split)", whole[1], second[1], 1e-6);
  }
}

TEST_CASE("sparse_block kernel at the 100M shapes over a long sequence", "[sparse_block][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const std::tuple<int, int, int> shapes[] = {{16, 4, 16}, {32, 8, 16}, {4, 2, 32}};  // (blocks, top_k, n_state)
  for (auto [nb, K, n] : shapes) {
    torch::manual_seed(10);
    auto in = make_inputs(4, 1024, nb, K, n, torch::kBFloat16, torch::kCUDA);
    const std::string name = "E87b" + std::to_string(nb) + "k" + std::to_string(K) + " T1024";
    expect_all_close(name, kNames, run(in, ops::Impl::Reference), run(in, ops::Impl::Kernel), 1e-2);
  }
}

TEST_CASE("sparse_block kernel rejects 33 blocks and n_state 65 on CUDA tensors", "[sparse_block][gpu]") {
  REQUIRE(torch::cuda::is_available());
  auto in = make_inputs(1, 4, 33, 4, 4, torch::kFloat, torch::kCUDA);
  require_error([&] { ops::sparse_block(in.proj, in.b_beta, in.S0, 33, 4, 4, ops::Impl::Kernel); },
                "blocks 33 is not supported");
  auto s = make_scan_inputs(1, 4, 2, 65, torch::kFloat, torch::kCUDA);
  require_error([&] { ops::sparse_block_scan(s.sp, s.b_beta, s.w, s.S0, 2, 65, ops::Impl::Kernel); },
                "n_state 65 is not supported");
}
