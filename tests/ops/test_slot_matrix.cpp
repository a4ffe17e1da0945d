// Slot-matrix nonlinear cell (E63m): the reference against an independent scalar computation and finite
// differences (CPU), argument errors, and the CUDA kernels against the reference, forward and every gradient, for
// slot counts 1..16 and widths up to the wide-column variant (GPU).
#include <cmath>
#include <cstdint>

#include "ops/slot_matrix/reference.h"
#include "ops/slot_matrix/slot_matrix.h"
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
  int64_t N = 1, D = 1;
  torch::Tensor proj, W_r, b, b_alpha, S0, dy, dS_T;
};

// Random inputs that keep the tanh's out of saturation at any D: k, q ~ N(0, 4 / D) (so S k and S q are O(1) for
// O(1) state entries), W_x x, W_alpha x ~ N(0, 1); W_r ~ N(0, 0.25 / N), b ~ N(0, 0.1), b_alpha ~ 2 + N(0, 0.5)
// (alpha mostly in (0.7, 0.95)); S0 ~ N(0, 0.09).
Inputs make_inputs(int64_t B, int64_t T, int64_t N, int64_t D, torch::Dtype dtype, torch::Device dev) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  Inputs in;
  in.N = N, in.D = D;
  auto kq = torch::randn({B, T, 2 * D}, f) * (2.0 / std::sqrt(static_cast<double>(D)));
  in.proj = torch::cat({kq, torch::randn({B, T, 2 * N}, f)}, 2).to(dtype);
  in.W_r = torch::randn({N, N}, f) * (0.5 / std::sqrt(static_cast<double>(N)));
  in.b = 0.1 * torch::randn({N}, f);
  in.b_alpha = 2.0 + 0.5 * torch::randn({N}, f);
  in.S0 = 0.3 * torch::randn({B, N, D}, f);
  in.dy = torch::randn({B, T, N}, f).to(dtype);
  in.dS_T = torch::randn({B, N, D}, f);
  return in;
}

Inputs to_double(Inputs in) {
  for (auto* t : {&in.proj, &in.W_r, &in.b, &in.b_alpha, &in.S0, &in.dy, &in.dS_T})
    if (t->defined()) *t = t->to(torch::kDouble);
  return in;
}

// Forward + backward of the scalar loss (y . dy) + (S_T . dS_T); returns {y, S_T, dproj, dW_r, db, db_alpha, dS0}
// (dS0 undefined when in.S0 is).
std::vector<torch::Tensor> run(const Inputs& in, ops::Impl impl, bool use_dy = true, bool use_dS_T = true) {
  auto proj = leaf(in.proj), W_r = leaf(in.W_r), b = leaf(in.b), b_alpha = leaf(in.b_alpha), S0 = leaf(in.S0);
  auto out = ops::slot_matrix(proj, W_r, b, b_alpha, S0, in.N, impl);
  const auto lt = in.dS_T.scalar_type();
  auto loss = torch::zeros({}, in.dS_T.options());
  if (use_dy) loss = loss + (out[0].to(lt) * in.dy.to(lt)).sum();
  if (use_dS_T) loss = loss + (out[1].to(lt) * in.dS_T).sum();
  loss.backward();
  return {out[0], out[1], proj.grad(), W_r.grad(), b.grad(), b_alpha.grad(), grad_of(S0)};
}

const std::vector<std::string> kNames = {"y", "S_T", "dproj", "dW_r", "db", "db_alpha", "dS0"};

void expect_all_close(const std::string& tag, const std::vector<torch::Tensor>& ref,
                      const std::vector<torch::Tensor>& got, double ratio) {
  test::expect_all_close(tag, kNames, ref, got, ratio);
}

double sig(double x) { return 1 / (1 + std::exp(-x)); }
}  // namespace

TEST_CASE("slot_matrix_reference follows the recurrence computed element by element", "[slot_matrix]") {
  torch::manual_seed(1);
  const int64_t B = 2, T = 5, N = 3, D = 4;
  auto in = to_double(make_inputs(B, T, N, D, torch::kDouble, torch::kCPU));
  auto out = ops::slot_matrix_reference(in.proj, in.W_r, in.b, in.b_alpha, in.S0, N);
  REQUIRE(out[0].sizes() == torch::IntArrayRef({B, T, N}));
  REQUIRE(out[1].sizes() == torch::IntArrayRef({B, N, D}));
  auto pr = in.proj.accessor<double, 3>();
  auto Wr = in.W_r.accessor<double, 2>();
  for (int64_t b = 0; b < B; ++b) {
    double S[3][4];
    for (int i = 0; i < N; ++i)
      for (int j = 0; j < D; ++j) S[i][j] = in.S0[b][i][j].item<double>();
    for (int64_t t = 0; t < T; ++t) {
      double k[4], q[4], r[3], v[3], al[3];
      for (int j = 0; j < D; ++j) k[j] = pr[b][t][j], q[j] = pr[b][t][D + j];
      for (int i = 0; i < N; ++i) {
        double sk = 0;
        for (int j = 0; j < D; ++j) sk += S[i][j] * k[j];
        r[i] = std::tanh(sk);
      }
      for (int i = 0; i < N; ++i) {
        double pre = pr[b][t][2 * D + i] + in.b[i].item<double>();
        for (int j = 0; j < N; ++j) pre += Wr[i][j] * r[j];
        v[i] = std::tanh(pre);
        al[i] = sig(pr[b][t][2 * D + N + i] + in.b_alpha[i].item<double>());
      }
      for (int i = 0; i < N; ++i) {
        double u = 0;
        for (int j = 0; j < D; ++j) {
          S[i][j] = al[i] * S[i][j] + (1 - al[i]) * v[i] * k[j];
          u += S[i][j] * q[j];
        }
        CHECK(std::abs(out[0][b][t][i].item<double>() - std::tanh(u)) < 1e-12);
      }
    }
    for (int i = 0; i < N; ++i)
      for (int j = 0; j < D; ++j) CHECK(std::abs(out[1][b][i][j].item<double>() - S[i][j]) < 1e-12);
  }
}

TEST_CASE("slot_matrix_reference gradients match finite differences in fp64", "[slot_matrix]") {
  torch::manual_seed(3);
  auto in = to_double(make_inputs(2, 5, 3, 4, torch::kDouble, torch::kCPU));
  auto g = run(in, ops::Impl::Reference);
  auto loss = [&] {
    auto out = ops::slot_matrix_reference(in.proj, in.W_r, in.b, in.b_alpha, in.S0, in.N);
    return (out[0] * in.dy).sum() + (out[1] * in.dS_T).sum();
  };
  expect_close("dproj (fd)", test::numeric_grad(loss, in.proj), g[2], 1e-7);
  expect_close("dW_r (fd)", test::numeric_grad(loss, in.W_r), g[3], 1e-7);
  expect_close("db (fd)", test::numeric_grad(loss, in.b), g[4], 1e-7);
  expect_close("db_alpha (fd)", test::numeric_grad(loss, in.b_alpha), g[5], 1e-7);
  expect_close("dS0 (fd)", test::numeric_grad(loss, in.S0), g[6], 1e-7);
}

TEST_CASE("slot_matrix_reference: T steps at once equal T1 then T-T1 with the carried state", "[slot_matrix]") {
  torch::manual_seed(5);
  auto in = to_double(make_inputs(3, 10, 4, 6, torch::kDouble, torch::kCPU));
  auto whole = ops::slot_matrix_reference(in.proj, in.W_r, in.b, in.b_alpha, in.S0, 4);
  auto first = ops::slot_matrix_reference(in.proj.narrow(1, 0, 4), in.W_r, in.b, in.b_alpha, in.S0, 4);
  auto second = ops::slot_matrix_reference(in.proj.narrow(1, 4, 6), in.W_r, in.b, in.b_alpha, first[1], 4);
  CHECK(torch::allclose(whole[0], torch::cat({first[0], second[0]}, 1), 0, 1e-13));
  CHECK(torch::allclose(whole[1], second[1], 0, 1e-13));
  // And with no initial state: zeros.
  auto none = ops::slot_matrix_reference(in.proj, in.W_r, in.b, in.b_alpha, torch::Tensor(), 4);
  auto zeros = ops::slot_matrix_reference(in.proj, in.W_r, in.b, in.b_alpha, torch::zeros_like(in.S0), 4);
  CHECK(torch::equal(none[0], zeros[0]));
  CHECK(none[1].scalar_type() == torch::kDouble);
}

TEST_CASE("slot_matrix rejects slot counts outside 1..16 and bad shapes", "[slot_matrix]") {
  auto in = make_inputs(2, 3, 4, 5, torch::kFloat, torch::kCPU);  // proj [2,3,18]
  for (auto impl : {ops::Impl::Reference, ops::Impl::Kernel}) {
    for (int64_t n : {0, 17, 64}) {
      auto bad = make_inputs(1, 2, std::max<int64_t>(n, 1), 3, torch::kFloat, torch::kCPU);
      require_error([&] { ops::slot_matrix(bad.proj, bad.W_r, bad.b, bad.b_alpha, bad.S0, n, impl); },
                    std::to_string(n) + " slots are not supported; use --slots from 1 to 16");
    }
  }
  const auto ref = ops::Impl::Reference;
  require_error([&] { ops::slot_matrix(in.proj.narrow(2, 0, 17), in.W_r, in.b, in.b_alpha, in.S0, 4, ref); },
                "proj must be [B,T,2D+2N] with D >= 1 and N = 4 slots");
  require_error([&] { ops::slot_matrix(in.proj.narrow(2, 0, 8), in.W_r, in.b, in.b_alpha, in.S0, 4, ref); },
                "proj must be [B,T,2D+2N]");
  require_error([&] { ops::slot_matrix(in.proj.select(0, 0), in.W_r, in.b, in.b_alpha, in.S0, 4, ref); },
                "proj must be [B,T,2D+2N]");
  require_error([&] { ops::slot_matrix(in.proj, in.W_r.narrow(1, 0, 3), in.b, in.b_alpha, in.S0, 4, ref); },
                "W_r must be a float [4,4]");
  require_error([&] { ops::slot_matrix(in.proj, in.W_r, in.b.narrow(0, 0, 3), in.b_alpha, in.S0, 4, ref); },
                "b must be a float [4]");
  require_error([&] { ops::slot_matrix(in.proj, in.W_r, in.b, torch::Tensor(), in.S0, 4, ref); },
                "b_alpha must be a float [4]");
  require_error([&] { ops::slot_matrix(in.proj, in.W_r, in.b, in.b_alpha, in.S0.narrow(2, 0, 4), 4, ref); },
                "S0 must be a float [2,4,5]");
  require_error([&] { ops::slot_matrix(in.proj.to(torch::kLong), in.W_r, in.b, in.b_alpha, in.S0, 4, ref); },
                "proj must be floating point");
  auto out = ops::slot_matrix(in.proj.to(torch::kBFloat16), in.W_r, in.b, in.b_alpha, torch::Tensor(), 4, ref);
  CHECK(out[0].sizes() == torch::IntArrayRef({2, 3, 4}));
  CHECK(out[0].scalar_type() == torch::kBFloat16);
  CHECK(out[1].sizes() == torch::IntArrayRef({2, 4, 5}));
  CHECK(out[1].scalar_type() == torch::kFloat);
  // The kernel's width limit: its state and gradient live in one block's registers.
  CHECK(ops::slot_matrix_kernel_max_width(8) == 2048);
  CHECK(ops::slot_matrix_kernel_max_width(16) == 1280);
  CHECK(ops::slot_matrix_kernel_max_width(1) == 4096);
}

TEST_CASE("asking for the slot_matrix kernel where it cannot run is an error", "[slot_matrix]") {
  auto in = make_inputs(1, 3, 2, 4, torch::kFloat, torch::kCPU);
  require_error([&] { ops::slot_matrix(in.proj, in.W_r, in.b, in.b_alpha, in.S0, 2, ops::Impl::Kernel); }, "CUDA");
}

TEST_CASE("slot_matrix kernel matches the reference: forward and every gradient", "[slot_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto N = GENERATE(1, 3, 8, 16);
  const auto D = GENERATE(1, 7, 64, 1280);
  const auto TB = GENERATE(std::make_pair(1, 3), std::make_pair(63, 1), std::make_pair(257, 3));
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const int64_t T = TB.first, B = TB.second;
  const std::string name = "N" + std::to_string(N) + "-D" + std::to_string(D) + "-T" + std::to_string(T) + "-B" +
                           std::to_string(B) + (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(N * 100000 + D * 10 + T + B);
    auto in = make_inputs(B, T, N, D, dtype, torch::kCUDA);
    auto ref = run(in, ops::Impl::Reference);
    auto got = run(in, ops::Impl::Kernel);
    // fp32: the same fp32 math in another order (fmaf, shuffle-tree sums). bf16: both sides read the same bf16
    // proj and round y and dproj to bf16.
    expect_all_close(name, ref, got, dtype == torch::kFloat ? 1e-4 : 1e-2);
  }
}

TEST_CASE("slot_matrix kernel: the wide-column variant (D > 1280)", "[slot_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto [N, D] : {std::make_pair(8, 2000), std::make_pair(3, 3001), std::make_pair(1, 4096)}) {
    for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
      const std::string name = "N" + std::to_string(N) + "-D" + std::to_string(D) +
                               (dtype == torch::kFloat ? "-fp32" : "-bf16");
      std::printf("%s\n", name.c_str());
      torch::manual_seed(N + D);
      auto in = make_inputs(2, 40, N, D, dtype, torch::kCUDA);
      expect_all_close(name, run(in, ops::Impl::Reference), run(in, ops::Impl::Kernel),
                       dtype == torch::kFloat ? 1e-4 : 1e-2);
    }
  }
}

TEST_CASE("slot_matrix kernel gradients with only y or only S_T in the loss, and no S0", "[slot_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(6);
  auto in = make_inputs(3, 70, 8, 200, torch::kFloat, torch::kCUDA);
  for (bool use_dy : {true, false}) {
    auto ref = run(in, ops::Impl::Reference, use_dy, !use_dy);
    auto got = run(in, ops::Impl::Kernel, use_dy, !use_dy);
    expect_all_close(use_dy ? "y only" : "S_T only", ref, got, 1e-4);
  }
  in.S0 = torch::Tensor();
  expect_all_close("no S0", run(in, ops::Impl::Reference), run(in, ops::Impl::Kernel), 1e-4);
}

TEST_CASE("slot_matrix kernel takes non-contiguous proj and incoming gradient", "[slot_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(7);
  auto in = make_inputs(2, 40, 5, 96, torch::kFloat, torch::kCUDA);  // proj [2,40,202]
  auto wide = torch::randn({2, 40, 300}, in.proj.options());
  wide.narrow(2, 31, 202).copy_(in.proj);
  Inputs strided = in;
  strided.proj = wide.narrow(2, 31, 202);
  strided.dy = in.dy.transpose(1, 2).contiguous().transpose(1, 2);
  REQUIRE(!strided.proj.is_contiguous());
  REQUIRE(!strided.dy.is_contiguous());
  expect_all_close("strided", run(in, ops::Impl::Reference), run(strided, ops::Impl::Kernel), 1e-4);
  // A contiguous bf16 proj at an odd element offset (2-byte aligned; the staging copies need 4): the launchers
  // copy it. (run() would clone it, so the op is called here directly.)
  auto odd = make_inputs(2, 40, 5, 96, torch::kBFloat16, torch::kCUDA);
  auto ref = run(odd, ops::Impl::Reference);
  const int64_t n = odd.proj.numel();
  auto flat = torch::zeros({1 + n}, odd.proj.options());
  flat.narrow(0, 1, n).copy_(odd.proj.flatten());
  flat.requires_grad_(true);
  auto proj = flat.narrow(0, 1, n).view(odd.proj.sizes());
  REQUIRE(proj.is_contiguous());
  REQUIRE(reinterpret_cast<uintptr_t>(proj.data_ptr()) % 4 != 0);
  auto out = ops::slot_matrix(proj, odd.W_r, odd.b, odd.b_alpha, odd.S0, 5, ops::Impl::Kernel);
  ((out[0].to(torch::kFloat) * odd.dy.to(torch::kFloat)).sum() + (out[1] * odd.dS_T).sum()).backward();
  expect_close("odd offset y", ref[0], out[0], 1e-2);
  expect_close("odd offset S_T", ref[1], out[1], 1e-2);
  expect_close("odd offset dproj", ref[2], flat.grad().narrow(0, 1, n).view(odd.proj.sizes()), 1e-2);
}

TEST_CASE("slot_matrix kernel: T steps at once equal T1 then T-T1 with the carried state", "[slot_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (int64_t N : {1, 8, 16}) {
    torch::manual_seed(9);
    auto in = make_inputs(3, 100, N, 1280, torch::kFloat, torch::kCUDA);
    auto whole = ops::slot_matrix(in.proj, in.W_r, in.b, in.b_alpha, in.S0, N, ops::Impl::Kernel);
    auto first = ops::slot_matrix(in.proj.narrow(1, 0, 37), in.W_r, in.b, in.b_alpha, in.S0, N, ops::Impl::Kernel);
    auto second = ops::slot_matrix(in.proj.narrow(1, 37, 63), in.W_r, in.b, in.b_alpha, first[1], N, ops::Impl::Kernel);
    const std::string name = "N" + std::to_string(N);
    expect_close(name + " y (split)", whole[0], torch::cat({first[0], second[0]}, 1), 1e-6);
    expect_close(name + " S_T (split)", whole[1], second[1], 1e-6);
  }
}

TEST_CASE("slot_matrix kernel at the 100M shape over a long sequence", "[slot_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(10);
  // E63m at dim 640 (D 1280, 8 slots), batch 4 (of 32), T = 1024: long enough for drift between the two to show.
  auto in = make_inputs(4, 1024, 8, 1280, torch::kBFloat16, torch::kCUDA);
  expect_all_close("E63m T1024", run(in, ops::Impl::Reference), run(in, ops::Impl::Kernel), 1e-2);
}

TEST_CASE("slot_matrix kernel rejects widths beyond its register budget on CUDA tensors", "[slot_matrix][gpu]") {
  REQUIRE(torch::cuda::is_available());
  auto in = make_inputs(1, 4, 16, 1281, torch::kFloat, torch::kCUDA);
  require_error([&] { ops::slot_matrix(in.proj, in.W_r, in.b, in.b_alpha, in.S0, 16, ops::Impl::Kernel); },
                "D = 1281 is too wide for the kernels with 16 slots (at most 1280");
}
