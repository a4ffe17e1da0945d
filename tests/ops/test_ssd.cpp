// Mamba2's SSD scan: the sequential reference against an independent scalar loop and finite differences, the
// carried state, and the LibTorch chunked algorithm against the reference, forward and every gradient (CPU; the
// chunked scan also on the GPU).
#include <cmath>
#include <functional>

#include "ops/ssd/ssd.h"
#include "tests/support/catch.h"
#include "tests/support/expect_close.h"
#include "tests/support/op_checks.h"

using namespace elman;
using test::expect_close;
using test::require_error;

namespace {
struct Inputs {
  torch::Tensor x, dt, A, Bm, Cm, D, h0, dy, dh_T;  // h0 may be undefined (zeros)
};

// Random inputs in Mamba2's ranges: dt in (0.001, 0.5) as softplus gives it, A in [-16, -1], x, B, C ~ N(0, 1)
// (SiLU outputs are of that size), D ~ 1 + N(0, 0.1), h0 ~ N(0, 0.5).
Inputs make_inputs(int64_t B, int64_t T, int64_t H, int64_t P, int64_t N, torch::Dtype dtype, torch::Device dev) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  Inputs in;
  in.x = torch::randn({B, T, H, P}, f).to(dtype);
  in.dt = torch::softplus(torch::randn({B, T, H}, f) - 2.0);
  in.A = -torch::exp(torch::rand({H}, f) * std::log(16.0));
  in.Bm = torch::randn({B, T, N}, f).to(dtype);
  in.Cm = torch::randn({B, T, N}, f).to(dtype);
  in.D = 1.0 + 0.1 * torch::randn({H}, f);
  in.h0 = 0.5 * torch::randn({B, H, P, N}, f);
  in.dy = torch::randn({B, T, H, P}, f).to(dtype);
  in.dh_T = torch::randn({B, H, P, N}, f);
  return in;
}

Inputs to_double(Inputs in) {
  for (auto* t : {&in.x, &in.dt, &in.A, &in.Bm, &in.Cm, &in.D, &in.h0, &in.dy, &in.dh_T})
    if (t->defined()) *t = t->to(torch::kDouble);
  return in;
}

// The loss every gradient test differentiates: (y . dy) + (h_T . dh_T).
torch::Tensor loss_of(const std::vector<torch::Tensor>& out, const Inputs& in) {
  const auto lt = in.dh_T.scalar_type();
  return (out[0].to(lt) * in.dy.to(lt)).sum() + (out[1].to(lt) * in.dh_T).sum();
}
}  // namespace

TEST_CASE("ssd_reference follows the recurrence computed element by element", "[ssd]") {
  torch::manual_seed(1);
  const int64_t B = 2, T = 5, H = 3, P = 2, N = 3;
  auto in = to_double(make_inputs(B, T, H, P, N, torch::kDouble, torch::kCPU));
  auto out = ops::ssd_reference(in.x, in.dt, in.A, in.Bm, in.Cm, in.D, in.h0);
  REQUIRE(out[0].sizes() == torch::IntArrayRef({B, T, H, P}));
  auto x = in.x.accessor<double, 4>(), h0 = in.h0.accessor<double, 4>();
  auto dt = in.dt.accessor<double, 3>(), Bm = in.Bm.accessor<double, 3>(), Cm = in.Cm.accessor<double, 3>();
  auto A = in.A.accessor<double, 1>(), D = in.D.accessor<double, 1>();
  auto y = out[0].accessor<double, 4>(), hT = out[1].accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      double s[2][3];
      for (int p = 0; p < P; ++p)
        for (int n = 0; n < N; ++n) s[p][n] = h0[b][h][p][n];
      for (int64_t t = 0; t < T; ++t) {
        const double decay = std::exp(dt[b][t][h] * A[h]);
        for (int p = 0; p < P; ++p) {
          double acc = 0;
          for (int n = 0; n < N; ++n) {
            s[p][n] = decay * s[p][n] + dt[b][t][h] * x[b][t][h][p] * Bm[b][t][n];
            acc += s[p][n] * Cm[b][t][n];
          }
          CHECK(std::abs(y[b][t][h][p] - (acc + D[h] * x[b][t][h][p])) < 1e-12);
        }
      }
      for (int p = 0; p < P; ++p)
        for (int n = 0; n < N; ++n) CHECK(std::abs(hT[b][h][p][n] - s[p][n]) < 1e-12);
    }
  }
}

TEST_CASE("ssd_reference gradients match finite differences in fp64", "[ssd]") {
  torch::manual_seed(2);
  auto in = to_double(make_inputs(2, 4, 2, 3, 2, torch::kDouble, torch::kCPU));
  auto loss = [&] { return loss_of(ops::ssd_reference(in.x, in.dt, in.A, in.Bm, in.Cm, in.D, in.h0), in); };
  std::vector<torch::Tensor> leaves;
  for (auto* t : {&in.x, &in.dt, &in.A, &in.Bm, &in.Cm, &in.D, &in.h0}) leaves.push_back(t->detach().requires_grad_(true));
  auto l = loss_of(ops::ssd_reference(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], leaves[5], leaves[6]), in);
  l.backward();
  const char* names[] = {"dx", "ddt", "dA", "dB", "dC", "dD", "dh0"};
  torch::Tensor* inputs[] = {&in.x, &in.dt, &in.A, &in.Bm, &in.Cm, &in.D, &in.h0};
  for (int i = 0; i < 7; ++i)
    expect_close(std::string(names[i]) + " (fd)", test::numeric_grad(loss, *inputs[i]), leaves[i].grad(), 1e-7);
}

TEST_CASE("ssd_reference: T steps at once equal T1 then T-T1 with the carried state", "[ssd]") {
  torch::manual_seed(3);
  auto in = to_double(make_inputs(3, 11, 2, 4, 5, torch::kDouble, torch::kCPU));
  auto part = [&](int64_t t0, int64_t len, const torch::Tensor& h0) {
    return ops::ssd_reference(in.x.narrow(1, t0, len), in.dt.narrow(1, t0, len), in.A, in.Bm.narrow(1, t0, len),
                              in.Cm.narrow(1, t0, len), in.D, h0);
  };
  auto whole = part(0, 11, in.h0);
  auto first = part(0, 4, in.h0);
  auto second = part(4, 7, first[1]);
  CHECK(torch::allclose(whole[0], torch::cat({first[0], second[0]}, 1), 0, 1e-13));
  CHECK(torch::allclose(whole[1], second[1], 0, 1e-13));
  // No initial state means zeros.
  auto none = ops::ssd_reference(in.x, in.dt, in.A, in.Bm, in.Cm, in.D, torch::Tensor());
  auto zeros = ops::ssd_reference(in.x, in.dt, in.A, in.Bm, in.Cm, in.D, torch::zeros_like(in.h0));
  CHECK(torch::equal(none[0], zeros[0]));
  CHECK(none[1].scalar_type() == torch::kDouble);
}

TEST_CASE("ssd rejects bad shapes and keeps x's dtype", "[ssd]") {
  auto in = make_inputs(2, 3, 2, 4, 5, torch::kFloat, torch::kCPU);
  const auto ref = ops::Impl::Reference;
  require_error([&] { ops::ssd(in.x, in.dt.narrow(2, 0, 1), in.A, in.Bm, in.Cm, in.D, in.h0, ref); }, "dt must be");
  require_error([&] { ops::ssd(in.x, in.dt, in.A, in.Bm, in.Cm.narrow(2, 0, 4), in.D, in.h0, ref); }, "C must be");
  require_error([&] { ops::ssd(in.x, in.dt, in.A.narrow(0, 0, 1), in.Bm, in.Cm, in.D, in.h0, ref); }, "A must be");
  require_error([&] { ops::ssd(in.x, in.dt, in.A, in.Bm, in.Cm, in.D, in.h0.narrow(3, 0, 4), ref); }, "h0 must be");
  auto out = ops::ssd(in.x.to(torch::kBFloat16), in.dt, in.A, in.Bm.to(torch::kBFloat16), in.Cm.to(torch::kBFloat16),
                      in.D, torch::Tensor(), ref);
  CHECK(out[0].scalar_type() == torch::kBFloat16);
  CHECK(out[1].scalar_type() == torch::kFloat);
  CHECK(out[1].sizes() == torch::IntArrayRef({2, 2, 4, 5}));
}

TEST_CASE("the ssd kernel rejects what it does not run, naming the chunked implementation", "[ssd]") {
  auto small = make_inputs(1, 3, 1, 4, 5, torch::kFloat, torch::kCPU);
  require_error([&] { ops::ssd(small.x, small.dt, small.A, small.Bm, small.Cm, small.D, small.h0, ops::Impl::Kernel); },
                "supports headdim P = 64 and d_state N = 128 only, got P = 4 and N = 5; use --impl chunked");
  auto in = make_inputs(1, 3, 1, 64, 128, torch::kFloat, torch::kCPU);
  auto d = to_double(in);
  require_error([&] { ops::ssd(d.x, d.dt, d.A, d.Bm, d.Cm, d.D, d.h0, ops::Impl::Kernel); },
                "takes float32 or bfloat16 x, got Double; use --impl chunked");
  require_error([&] { ops::ssd(in.x, in.dt, in.A, in.Bm, in.Cm, in.D, in.h0, ops::Impl::Kernel); },
                ops::built_with_cuda() ? "needs CUDA tensors" : "built without CUDA");
}

namespace {
// Forward + backward of loss_of for one implementation; returns {y, h_T, dx, ddt, dA, dB, dC, dD, dh0}
// (dh0 undefined when in.h0 is).
std::vector<torch::Tensor> run(const Inputs& in, const std::function<std::vector<torch::Tensor>(
                                                     const std::vector<torch::Tensor>&)>& impl) {
  std::vector<torch::Tensor> leaves;
  for (const auto* t : {&in.x, &in.dt, &in.A, &in.Bm, &in.Cm, &in.D, &in.h0})
    leaves.push_back(t->defined() ? t->detach().clone().requires_grad_(true) : torch::Tensor());
  auto out = impl(leaves);
  loss_of(out, in).backward();
  std::vector<torch::Tensor> r = {out[0], out[1]};
  for (auto& l : leaves) r.push_back(l.defined() ? l.grad() : torch::Tensor());
  return r;
}

std::vector<torch::Tensor> run_reference(const Inputs& in) {
  return run(in, [](const std::vector<torch::Tensor>& a) { return ops::ssd_reference(a[0], a[1], a[2], a[3], a[4], a[5], a[6]); });
}
std::vector<torch::Tensor> run_chunked(const Inputs& in, int64_t L) {
  return run(in, [L](const std::vector<torch::Tensor>& a) { return ops::ssd_chunked(a[0], a[1], a[2], a[3], a[4], a[5], a[6], L); });
}
std::vector<torch::Tensor> run_kernel(const Inputs& in) {
  return run(in, [](const std::vector<torch::Tensor>& a) {
    return ops::ssd(a[0], a[1], a[2], a[3], a[4], a[5], a[6], ops::Impl::Kernel);
  });
}

const std::vector<std::string> kNames = {"y", "h_T", "dx", "ddt", "dA", "dB", "dC", "dD", "dh0"};

void expect_all_close(const std::string& tag, const std::vector<torch::Tensor>& ref,
                      const std::vector<torch::Tensor>& got, double ratio) {
  test::expect_all_close(tag, kNames, ref, got, ratio);
}
}  // namespace

TEST_CASE("ssd_chunked equals the sequential reference: forward and every gradient, fp64 and fp32", "[ssd]") {
  // T below, at and across chunk boundaries, including T not a multiple of L and a single step.
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    for (const auto& [T, L] : std::vector<std::pair<int64_t, int64_t>>{{1, 4}, {7, 4}, {8, 4}, {9, 4}, {21, 8}, {13, 1}, {5, 16}}) {
      for (int64_t B : {1, 3}) {
        const std::string name = std::string(dtype == torch::kDouble ? "fp64" : "fp32") + " T" + std::to_string(T) +
                                 " L" + std::to_string(L) + " B" + std::to_string(B);
        torch::manual_seed(T * 100 + L * 10 + B);
        auto in = make_inputs(B, T, 3, 4, 5, torch::kFloat, torch::kCPU);
        if (dtype == torch::kDouble) in = to_double(in);
        expect_all_close(name, run_reference(in), run_chunked(in, L), dtype == torch::kDouble ? 1e-12 : 1e-5);
      }
    }
  }
}

TEST_CASE("ssd_chunked: no initial state, and only y or only h_T in the loss", "[ssd]") {
  torch::manual_seed(4);
  auto in = to_double(make_inputs(2, 19, 2, 3, 4, torch::kDouble, torch::kCPU));
  in.h0 = torch::Tensor();
  expect_all_close("no h0", run_reference(in), run_chunked(in, 8), 1e-12);
  auto y_only = in, h_only = in;
  y_only.dh_T = torch::zeros_like(in.dh_T), h_only.dy = torch::zeros_like(in.dy);
  expect_all_close("y only", run_reference(y_only), run_chunked(y_only, 8), 1e-12);
  expect_all_close("h_T only", run_reference(h_only), run_chunked(h_only, 8), 1e-12);
}

TEST_CASE("ssd_chunked at the default chunk over several chunks with Mamba2's head sizes", "[ssd]") {
  torch::manual_seed(5);
  // P 64, N 128 as in the 100M model; T = 2 chunks + 3 steps; strong decay (dt up to ~3) on some heads.
  auto in = make_inputs(1, 2 * ops::kSsdChunk + 3, 2, 64, 128, torch::kFloat, torch::kCPU);
  in.dt = in.dt * 6.0;
  // The math in fp64, then fp32 against the fp64 truth. The chunked decays come from segment sums; formed as
  // differences of the within-chunk cumulative sums (down to ~-500 here) they cost dA ~3e-5 in fp32, over this limit.
  auto truth = run_reference(to_double(in));
  expect_all_close("P64 N128 T131 fp64", truth, run_chunked(to_double(in), ops::kSsdChunk), 1e-12);
  expect_all_close("P64 N128 T131 reference fp32", truth, run_reference(in), 1e-5);
  expect_all_close("P64 N128 T131 chunked fp32", truth, run_chunked(in, ops::kSsdChunk), 1e-5);
}

TEST_CASE("the ssd op runs the chunked implementation as Impl::Chunked", "[ssd]") {
  torch::manual_seed(6);
  auto in = make_inputs(2, 70, 2, 4, 5, torch::kFloat, torch::kCPU);
  auto op = ops::ssd(in.x, in.dt, in.A, in.Bm, in.Cm, in.D, in.h0, ops::Impl::Chunked);
  auto direct = ops::ssd_chunked(in.x, in.dt, in.A, in.Bm, in.Cm, in.D, in.h0, ops::kSsdChunk);
  CHECK(torch::equal(op[0], direct[0]));
  CHECK(torch::equal(op[1], direct[1]));
  require_error([&] { ops::ssd_chunked(in.x, in.dt, in.A, in.Bm, in.Cm, in.D, in.h0, 0); }, "chunk length");
}

TEST_CASE("ssd_chunked on the GPU matches the reference: forward and every gradient", "[ssd][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto T = GENERATE(1, 63, 64, 65, 257);
  const auto B = GENERATE(1, 3);
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const std::string name = "chunked-T" + std::to_string(T) + "-B" + std::to_string(B) +
                           (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(T * 10 + B);
    auto in = make_inputs(B, T, 4, 64, 128, dtype, torch::kCUDA);
    // fp32: TF32 is off by default in LibTorch matmuls, so the same fp32 math in another order. bf16: both read
    // the same bf16 inputs and round y and the input gradients to bf16.
    expect_all_close(name, run_reference(in), run_chunked(in, ops::kSsdChunk), dtype == torch::kFloat ? 1e-4 : 1e-2);
  }
}

// The CUDA kernels (cuda/ssd) against the sequential reference and the chunked scan. fp32: the kernel's fp32
// products (chunks of 32) against the same math in another order. bf16: every side reads the same bf16 inputs;
// the kernel also rounds its in-kernel operands (the decay-masked C B^T, the carried state, dG, ...) to bf16 for
// the tensor cores, where the reference keeps them in fp32, so its limit is twice the chunked scan's.
TEST_CASE("ssd kernel matches the reference and the chunked scan: forward and every gradient", "[ssd][gpu]") {
  REQUIRE(torch::cuda::is_available());
  // T below, at and across the chunk lengths (32 for fp32, 64 for bf16), paired with B and H.
  constexpr int64_t kShapes[][3] = {{1, 1, 1}, {63, 3, 3}, {64, 1, 3}, {65, 3, 1}, {257, 1, 3}, {257, 3, 1}};
  const auto shape = GENERATE(0, 1, 2, 3, 4, 5);
  const int64_t T = kShapes[shape][0], B = kShapes[shape][1], H = kShapes[shape][2];
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const auto grads = GENERATE(0, 1, 2);  // from y and h_T; from y only; from h_T only
  const std::string name = "kernel-T" + std::to_string(T) + "-B" + std::to_string(B) + "-H" + std::to_string(H) +
                           (dtype == torch::kFloat ? "-fp32" : "-bf16") +
                           (grads == 0 ? "" : grads == 1 ? "-y-only" : "-hT-only");
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(T * 100 + B * 10 + H);
    auto in = make_inputs(B, T, H, 64, 128, dtype, torch::kCUDA);
    if (grads == 1) in.dh_T = torch::zeros_like(in.dh_T);
    if (grads == 2) in.dy = torch::zeros_like(in.dy);
    const double limit = dtype == torch::kFloat ? 1e-4 : 2e-2;
    auto got = run_kernel(in);
    expect_all_close(name + " vs reference", run_reference(in), got, limit);
    expect_all_close(name + " vs chunked", run_chunked(in, ops::kSsdChunk), got, limit);
  }
}

TEST_CASE("ssd kernel without an initial state, and with non-contiguous inputs", "[ssd][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const std::string tag = dtype == torch::kFloat ? "fp32" : "bf16";
    const double limit = dtype == torch::kFloat ? 1e-4 : 2e-2;
    torch::manual_seed(7);
    auto in = make_inputs(2, 100, 2, 64, 128, dtype, torch::kCUDA);
    in.h0 = torch::Tensor();
    expect_all_close(tag + " no h0", run_reference(in), run_kernel(in), limit);
    // As Mamba2 passes them: x, B and C slices of one wider tensor, dt a slice too.
    auto wide = torch::randn({2, 100, 2 * 64 + 2 * 128 + 2}, in.dy.options());
    in.x = wide.narrow(2, 0, 2 * 64).view({2, 100, 2, 64});
    in.Bm = wide.narrow(2, 2 * 64, 128);
    in.Cm = wide.narrow(2, 2 * 64 + 128, 128);
    in.dt = torch::softplus(wide.narrow(2, 2 * 64 + 256, 2).to(torch::kFloat) - 2.0);
    REQUIRE(!in.x.is_contiguous());
    expect_all_close(tag + " strided", run_reference(in), run_kernel(in), limit);
  }
}

TEST_CASE("ssd kernel in fp32 with strong decay against the fp64 truth", "[ssd][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(8);
  // As the CPU chunked test: dt up to ~3 on some heads, so a falls to ~-500 within a chunk; the kernel forms the
  // decays from a in double and must stay as close to the truth as the chunked scan's segment sums.
  auto in = make_inputs(2, 2 * ops::kSsdChunk + 3, 3, 64, 128, torch::kFloat, torch::kCUDA);
  in.dt = in.dt * 6.0;
  auto truth = run_reference(to_double(in));
  expect_all_close("strong decay kernel fp32", truth, run_kernel(in), 1e-5);
}

TEST_CASE("ssd kernel: T steps at once equal T1 then T-T1 with the carried state, forward and gradients",
          "[ssd][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const std::string tag = dtype == torch::kFloat ? "fp32" : "bf16";
    torch::manual_seed(9);
    const int64_t T = 150, T1 = 37;  // T1 inside the second fp32 chunk and the first bf16 one
    auto in = make_inputs(3, T, 2, 64, 128, dtype, torch::kCUDA);
    auto whole = run_kernel(in);
    auto split = run(in, [&](const std::vector<torch::Tensor>& a) {
      auto part = [&](int64_t t0, int64_t len, const torch::Tensor& h) {
        return ops::ssd(a[0].narrow(1, t0, len), a[1].narrow(1, t0, len), a[2], a[3].narrow(1, t0, len),
                        a[4].narrow(1, t0, len), a[5], h, ops::Impl::Kernel);
      };
      auto first = part(0, T1, a[6]);
      auto second = part(T1, T - T1, first[1]);
      return std::vector<torch::Tensor>{torch::cat({first[0], second[0]}, 1), second[1]};
    });
    // fp32: the chunks fall elsewhere, so the sums run in another order; bf16: the state entering the second
    // part is rounded to bf16 at another step.
    expect_all_close(tag + " split", whole, split, dtype == torch::kFloat ? 1e-5 : 2e-2);
  }
}
