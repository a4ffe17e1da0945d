// The gated delta rule (GatedDeltaNet): the sequential reference against an independent scalar loop and finite
// differences, the carried state, and the LibTorch chunked WY algorithm against the reference, forward and every
// gradient (CPU; the chunked scan also on the GPU); the kernel's size checks (CPU) and on the GPU the kernel
// against the reference and the chunked scan.
#include <cmath>
#include <functional>

#include "ops/gated_delta/gated_delta.h"
#include "tests/support/catch.h"
#include "tests/support/expect_close.h"
#include "tests/support/gated_delta_inputs.h"
#include "tests/support/op_checks.h"

using namespace elman;
using test::expect_close;
using test::require_error;

namespace {
// The gated delta rule's inputs (tests/support/gated_delta_inputs.h) with h0 ~ N(0, 0.5) (may be undefined: zeros)
// and the upstream gradients of o and S_T.
struct Inputs : test::GatedDeltaInputs {
  torch::Tensor h0, dout, dh_T;
};

Inputs make_inputs(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, torch::Dtype dtype, torch::Device dev,
                   double decay_scale = 1.0) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  Inputs in;
  static_cast<test::GatedDeltaInputs&>(in) = test::gated_delta_inputs(B, T, H, K, V, dtype, dev, decay_scale);
  in.h0 = 0.5 * torch::randn({B, H, K, V}, f);
  in.dout = torch::randn({B, T, H, V}, f).to(dtype);
  in.dh_T = torch::randn({B, H, K, V}, f);
  return in;
}

Inputs to_double(Inputs in) {
  for (auto* t : {&in.q, &in.k, &in.v, &in.g, &in.beta, &in.h0, &in.dout, &in.dh_T})
    if (t->defined()) *t = t->to(torch::kDouble);
  return in;
}

// The loss every gradient test differentiates: (o . dout) + (S_T . dh_T).
torch::Tensor loss_of(const std::vector<torch::Tensor>& out, const Inputs& in) {
  const auto lt = in.dh_T.scalar_type();
  return (out[0].to(lt) * in.dout.to(lt)).sum() + (out[1].to(lt) * in.dh_T).sum();
}
}  // namespace

TEST_CASE("gated_delta_reference follows the recurrence computed element by element", "[gated_delta]") {
  torch::manual_seed(1);
  constexpr int64_t B = 2, T = 6, H = 3, K = 3, V = 2;
  auto in = to_double(make_inputs(B, T, H, K, V, torch::kDouble, torch::kCPU, 3.0));
  auto out = ops::gated_delta_reference(in.q, in.k, in.v, in.g, in.beta, in.h0);
  REQUIRE(out[0].sizes() == torch::IntArrayRef({B, T, H, V}));
  REQUIRE(out[1].sizes() == torch::IntArrayRef({B, H, K, V}));
  auto q = in.q.accessor<double, 4>(), k = in.k.accessor<double, 4>(), v = in.v.accessor<double, 4>();
  auto g = in.g.accessor<double, 3>(), beta = in.beta.accessor<double, 3>();
  auto h0 = in.h0.accessor<double, 4>();
  auto o = out[0].accessor<double, 4>(), hT = out[1].accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      double S[K][V];
      for (int i = 0; i < K; ++i)
        for (int j = 0; j < V; ++j) S[i][j] = h0[b][h][i][j];
      for (int64_t t = 0; t < T; ++t) {
        // S = (I - beta k k^T) exp(g) S + beta k v^T, written with the matrices spelled out.
        const double a = std::exp(g[b][t][h]), bt = beta[b][t][h];
        double next[K][V];
        for (int i = 0; i < K; ++i)
          for (int j = 0; j < V; ++j) {
            double acc = a * S[i][j] + bt * k[b][t][h][i] * v[b][t][h][j];
            for (int m = 0; m < K; ++m) acc -= bt * k[b][t][h][i] * k[b][t][h][m] * a * S[m][j];
            next[i][j] = acc;
          }
        for (int i = 0; i < K; ++i)
          for (int j = 0; j < V; ++j) S[i][j] = next[i][j];
        for (int j = 0; j < V; ++j) {  // o = S^T q
          double acc = 0;
          for (int i = 0; i < K; ++i) acc += S[i][j] * q[b][t][h][i];
          CHECK(std::abs(o[b][t][h][j] - acc) < 1e-12);
        }
      }
      for (int i = 0; i < K; ++i)
        for (int j = 0; j < V; ++j) CHECK(std::abs(hT[b][h][i][j] - S[i][j]) < 1e-12);
    }
  }
}

TEST_CASE("gated_delta_reference gradients match finite differences in fp64", "[gated_delta]") {
  torch::manual_seed(2);
  auto in = to_double(make_inputs(2, 4, 2, 3, 2, torch::kDouble, torch::kCPU));
  auto loss = [&] { return loss_of(ops::gated_delta_reference(in.q, in.k, in.v, in.g, in.beta, in.h0), in); };
  std::vector<torch::Tensor> leaves;
  for (auto* t : {&in.q, &in.k, &in.v, &in.g, &in.beta, &in.h0}) leaves.push_back(t->detach().requires_grad_(true));
  loss_of(ops::gated_delta_reference(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], leaves[5]), in).backward();
  const char* names[] = {"dq", "dk", "dv", "dg", "dbeta", "dh0"};
  torch::Tensor* inputs[] = {&in.q, &in.k, &in.v, &in.g, &in.beta, &in.h0};
  for (int i = 0; i < 6; ++i)
    expect_close(std::string(names[i]) + " (fd)", test::numeric_grad(loss, *inputs[i]), leaves[i].grad(), 1e-7);
}

TEST_CASE("gated_delta_reference: T steps at once equal T1 then T-T1 with the carried state", "[gated_delta]") {
  torch::manual_seed(3);
  auto in = to_double(make_inputs(3, 11, 2, 4, 5, torch::kDouble, torch::kCPU));
  auto part = [&](int64_t t0, int64_t len, const torch::Tensor& h0) {
    return ops::gated_delta_reference(in.q.narrow(1, t0, len), in.k.narrow(1, t0, len), in.v.narrow(1, t0, len),
                                      in.g.narrow(1, t0, len), in.beta.narrow(1, t0, len), h0);
  };
  auto whole = part(0, 11, in.h0);
  auto first = part(0, 4, in.h0);
  auto second = part(4, 7, first[1]);
  CHECK(torch::allclose(whole[0], torch::cat({first[0], second[0]}, 1), 0, 1e-13));
  CHECK(torch::allclose(whole[1], second[1], 0, 1e-13));
  // No initial state means zeros.
  auto none = ops::gated_delta_reference(in.q, in.k, in.v, in.g, in.beta, torch::Tensor());
  auto zeros = ops::gated_delta_reference(in.q, in.k, in.v, in.g, in.beta, torch::zeros_like(in.h0));
  CHECK(torch::equal(none[0], zeros[0]));
  CHECK(none[1].scalar_type() == torch::kDouble);
}

TEST_CASE("gated_delta rejects bad shapes and keeps v's dtype", "[gated_delta]") {
  auto in = make_inputs(2, 3, 2, 4, 6, torch::kFloat, torch::kCPU);
  const auto ref = ops::Impl::Reference;
  require_error([&] { ops::gated_delta(in.q, in.k.narrow(3, 0, 3), in.v, in.g, in.beta, in.h0, ref); }, "k must be");
  require_error([&] { ops::gated_delta(in.q, in.k, in.v.narrow(1, 0, 2), in.g, in.beta, in.h0, ref); }, "v must be");
  require_error([&] { ops::gated_delta(in.q, in.k, in.v, in.g.narrow(2, 0, 1), in.beta, in.h0, ref); }, "g must be");
  require_error([&] { ops::gated_delta(in.q, in.k, in.v, in.g, in.beta.narrow(1, 0, 2), in.h0, ref); }, "beta must be");
  require_error([&] { ops::gated_delta(in.q, in.k, in.v, in.g, in.beta, in.h0.narrow(3, 0, 5), ref); }, "h0 must be");
  require_error([&] { ops::gated_delta(in.q, in.k, in.v, in.g, torch::Tensor(), in.h0, ref); }, "beta must be");
  for (auto impl : {ops::Impl::Reference, ops::Impl::Chunked}) {
    auto out = ops::gated_delta(in.q.to(torch::kBFloat16), in.k.to(torch::kBFloat16), in.v.to(torch::kBFloat16), in.g,
                                in.beta, torch::Tensor(), impl);
    CHECK(out[0].scalar_type() == torch::kBFloat16);
    CHECK(out[0].sizes() == torch::IntArrayRef({2, 3, 2, 6}));
    CHECK(out[1].scalar_type() == torch::kFloat);
    CHECK(out[1].sizes() == torch::IntArrayRef({2, 2, 4, 6}));
  }
}

TEST_CASE("the gated_delta kernel rejects head sizes it does not support, naming --impl chunked", "[gated_delta]") {
  auto in = make_inputs(1, 3, 1, 4, 64, torch::kFloat, torch::kCPU);
  require_error([&] { ops::gated_delta(in.q, in.k, in.v, in.g, in.beta, in.h0, ops::Impl::Kernel); },
                "supports key head dim 128 and value head dim a multiple of 64, got K 4, V 64; use --impl chunked");
  auto wide = make_inputs(1, 3, 1, 128, 96, torch::kFloat, torch::kCPU);
  require_error([&] { ops::gated_delta(wide.q, wide.k, wide.v, wide.g, wide.beta, wide.h0, ops::Impl::Kernel); },
                "got K 128, V 96; use --impl chunked");
  auto f64 = to_double(make_inputs(1, 3, 1, 128, 64, torch::kFloat, torch::kCPU));
  require_error([&] { ops::gated_delta(f64.q, f64.k, f64.v, f64.g, f64.beta, f64.h0, ops::Impl::Kernel); },
                "use --impl chunked for float64");
}

namespace {
// Forward + backward of loss_of for one implementation; returns {o, S_T, dq, dk, dv, dg, dbeta, dh0}
// (dh0 undefined when in.h0 is).
using OpFn = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;
std::vector<torch::Tensor> run(const Inputs& in, const OpFn& op) {
  std::vector<torch::Tensor> leaves;
  for (const auto* t : {&in.q, &in.k, &in.v, &in.g, &in.beta, &in.h0}) leaves.push_back(test::leaf(*t));
  auto out = op(leaves);
  loss_of(out, in).backward();
  std::vector<torch::Tensor> r = {out[0], out[1]};
  for (auto& l : leaves) r.push_back(test::grad_of(l));
  return r;
}

std::vector<torch::Tensor> run_reference(const Inputs& in) {
  return run(in, [](const std::vector<torch::Tensor>& a) { return ops::gated_delta_reference(a[0], a[1], a[2], a[3], a[4], a[5]); });
}
std::vector<torch::Tensor> run_chunked(const Inputs& in, int64_t L = ops::kGatedDeltaChunk) {
  return run(in, [L](const std::vector<torch::Tensor>& a) { return ops::gated_delta_chunked(a[0], a[1], a[2], a[3], a[4], a[5], L); });
}
std::vector<torch::Tensor> run_kernel(const Inputs& in) {
  return run(in, [](const std::vector<torch::Tensor>& a) {
    return ops::gated_delta(a[0], a[1], a[2], a[3], a[4], a[5], ops::Impl::Kernel);
  });
}
// The op as two calls in one graph: steps [0, t1), then [t1, T) from the first call's final state.
OpFn split_at(int64_t t1, ops::Impl impl) {
  return [t1, impl](const std::vector<torch::Tensor>& a) {
    auto part = [&](int64_t t0, int64_t len, const torch::Tensor& h0) {
      return ops::gated_delta(a[0].narrow(1, t0, len), a[1].narrow(1, t0, len), a[2].narrow(1, t0, len),
                              a[3].narrow(1, t0, len), a[4].narrow(1, t0, len), h0, impl);
    };
    auto first = part(0, t1, a[5]);
    auto second = part(t1, a[0].size(1) - t1, first[1]);
    return std::vector<torch::Tensor>{torch::cat({first[0], second[0]}, 1), second[1]};
  };
}

const std::vector<std::string> kNames = {"o", "S_T", "dq", "dk", "dv", "dg", "dbeta", "dh0"};

void expect_all_close(const std::string& tag, const std::vector<torch::Tensor>& ref,
                      const std::vector<torch::Tensor>& got, double ratio) {
  test::expect_all_close(tag, kNames, ref, got, ratio);
}
}  // namespace

TEST_CASE("gated_delta_chunked equals the sequential reference: forward and every gradient, fp64 and fp32", "[gated_delta]") {
  // The default chunk of 64: T of one step, just below, at and just above one chunk, and two chunks plus two steps.
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    for (int64_t T : {1, 63, 64, 65, 130}) {
      for (int64_t B : {1, 3}) {
        const std::string name = std::string(dtype == torch::kDouble ? "fp64" : "fp32") + "-T" + std::to_string(T) +
                                 "-B" + std::to_string(B) + "-H2-K8-V16";
        torch::manual_seed(T * 10 + B);
        auto in = make_inputs(B, T, 2, 8, 16, torch::kFloat, torch::kCPU);
        if (dtype == torch::kDouble) in = to_double(in);
        // fp32: the same fp32 math in another order (the triangular solve, matmuls over the chunk).
        expect_all_close(name, run_reference(in), run_chunked(in), dtype == torch::kDouble ? 1e-12 : 1e-5);
      }
    }
  }
}

TEST_CASE("gated_delta_chunked at short chunks, no initial state, and only o or only S_T in the loss", "[gated_delta]") {
  torch::manual_seed(4);
  auto in = to_double(make_inputs(2, 19, 2, 3, 4, torch::kDouble, torch::kCPU));
  for (int64_t L : {1, 4, 8, 19, 32}) expect_all_close("L" + std::to_string(L), run_reference(in), run_chunked(in, L), 1e-12);
  in.h0 = torch::Tensor();
  expect_all_close("no h0", run_reference(in), run_chunked(in, 8), 1e-12);
  auto o_only = in, h_only = in;
  o_only.dh_T = torch::zeros_like(in.dh_T), h_only.dout = torch::zeros_like(in.dout);
  expect_all_close("o only", run_reference(o_only), run_chunked(o_only, 8), 1e-12);
  expect_all_close("S_T only", run_reference(h_only), run_chunked(h_only, 8), 1e-12);
}

TEST_CASE("gated_delta_chunked: a sequence split at a step inside a chunk equals the whole, gradients included", "[gated_delta]") {
  torch::manual_seed(5);
  auto in = to_double(make_inputs(2, 150, 2, 8, 16, torch::kDouble, torch::kCPU));
  auto whole = run_chunked(in);
  // The split: 70 then 80 steps, the second part starting from the first's final state, one graph for both.
  expect_all_close("split 70+80", whole, run(in, split_at(70, ops::Impl::Chunked)), 1e-12);
}

TEST_CASE("gated_delta_chunked with the 100M head sizes (K 128, V 256) and strong decay against fp64", "[gated_delta]") {
  torch::manual_seed(6);
  // T = 2 chunks + 3 steps; decay up to ~10x the layer's initial range on some heads.
  auto in = make_inputs(1, 2 * ops::kGatedDeltaChunk + 3, 2, 128, 256, torch::kFloat, torch::kCPU, 10.0);
  auto truth = run_reference(to_double(in));
  expect_all_close("K128 V256 T131 chunked fp64", truth, run_chunked(to_double(in)), 1e-12);
  expect_all_close("K128 V256 T131 reference fp32", truth, run_reference(in), 1e-5);
  expect_all_close("K128 V256 T131 chunked fp32", truth, run_chunked(in), 1e-5);
}

TEST_CASE("the gated_delta op runs the chunked implementation as Impl::Chunked", "[gated_delta]") {
  torch::manual_seed(7);
  auto in = make_inputs(2, 70, 2, 4, 6, torch::kFloat, torch::kCPU);
  auto op = ops::gated_delta(in.q, in.k, in.v, in.g, in.beta, in.h0, ops::Impl::Chunked);
  auto direct = ops::gated_delta_chunked(in.q, in.k, in.v, in.g, in.beta, in.h0, ops::kGatedDeltaChunk);
  CHECK(torch::equal(op[0], direct[0]));
  CHECK(torch::equal(op[1], direct[1]));
  require_error([&] { ops::gated_delta_chunked(in.q, in.k, in.v, in.g, in.beta, in.h0, 0); }, "chunk length");
}

TEST_CASE("gated_delta_chunked on the GPU matches the reference: forward and every gradient", "[gated_delta][gpu]") {
  REQUIRE(torch::cuda::is_available());
  // (T, B) pairs instead of the full product; the small heads and the 100M model's K 128, V 256.
  using Pair = std::pair<int64_t, int64_t>;
  const auto tb = GENERATE(values<Pair>({{1, 3}, {63, 1}, {64, 3}, {65, 1}, {257, 3}}));  // (T, B)
  const auto kv = GENERATE(values<Pair>({{16, 32}, {128, 256}}));                         // (K, V)
  const int64_t T = tb.first, B = tb.second, K = kv.first, V = kv.second;
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const std::string name = "chunked-T" + std::to_string(T) + "-B" + std::to_string(B) + "-K" + std::to_string(K) +
                           "-V" + std::to_string(V) + (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(T * 10 + B + K);
    auto in = make_inputs(B, T, 2, K, V, dtype, torch::kCUDA);
    // fp32: TF32 is off by default in LibTorch matmuls, so the same fp32 math in another order. bf16: both read
    // the same bf16 inputs, compute in fp32 and round o and the q, k, v gradients to bf16.
    expect_all_close(name, run_reference(in), run_chunked(in), dtype == torch::kFloat ? 1e-4 : 1e-2);
  }
}

namespace {
// Kernel against `ref`: o, S_T, dq, dk, dv, dh0 within `ratio`, the decay and write-strength gradients (sums over
// the chunk with cancellation) within `ratio_gb`.
void expect_kernel_close(const std::string& tag, const std::vector<torch::Tensor>& ref,
                         const std::vector<torch::Tensor>& got, double ratio, double ratio_gb) {
  REQUIRE(ref.size() == got.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    INFO(tag + " " + kNames[i]);
    REQUIRE(ref[i].defined() == got[i].defined());
    if (!ref[i].defined()) continue;
    CHECK(ref[i].scalar_type() == got[i].scalar_type());
    const bool gb = kNames[i] == "dg" || kNames[i] == "dbeta";
    expect_close(tag + " " + kNames[i], ref[i], got[i], gb ? ratio_gb : ratio);
  }
}
}  // namespace

TEST_CASE("the gated_delta kernel matches the reference and the chunked scan: forward and every gradient", "[gated_delta][gpu]") {
  REQUIRE(torch::cuda::is_available());
  // (T, B) pairs instead of the full product; the 100M model's heads (K 128, V 256) and one V tile's worth (V 64).
  using Pair = std::pair<int64_t, int64_t>;
  const auto tb = GENERATE(values<Pair>({{1, 3}, {63, 1}, {64, 3}, {65, 1}, {257, 3}}));  // (T, B)
  const auto V = GENERATE(values<int64_t>({256, 64}));
  const auto H = GENERATE(values<int64_t>({1, 2}));
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const int64_t T = tb.first, B = tb.second, K = 128;
  const std::string name = "kernel-T" + std::to_string(T) + "-B" + std::to_string(B) + "-H" + std::to_string(H) +
                           "-V" + std::to_string(V) + (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(T * 10 + B + V + H);
    auto in = make_inputs(B, T, H, K, V, dtype, torch::kCUDA);
    auto ker = run_kernel(in);
    // fp32: the chunked algorithm in fp32, its state pass in another summation order. bf16: the kernel rounds its
    // operands (W, Ut, Qg, Kl, P, the state and U) to bf16 and multiplies them on tensor cores.
    const bool f32 = dtype == torch::kFloat;
    expect_kernel_close(name + " vs reference", run_reference(in), ker, f32 ? 1e-4 : 2e-2, f32 ? 1e-4 : 5e-2);
    expect_kernel_close(name + " vs chunked", run_chunked(in), ker, f32 ? 1e-4 : 2e-2, f32 ? 1e-4 : 5e-2);
  }
}

TEST_CASE("the gated_delta kernel with q and k L2-normalised inside (qk_l2norm) matches the reference and the chunked scan",
          "[gated_delta][gpu]") {
  REQUIRE(torch::cuda::is_available());
  using Pair = std::pair<int64_t, int64_t>;
  const auto tb = GENERATE(values<Pair>({{1, 3}, {65, 1}, {257, 3}}));  // (T, B)
  const auto V = GENERATE(values<int64_t>({256, 64}));
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const int64_t T = tb.first, B = tb.second, H = 2, K = 128;
  const std::string name = "l2-T" + std::to_string(T) + "-B" + std::to_string(B) + "-V" + std::to_string(V) +
                           (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    torch::manual_seed(T * 3 + B + V);
    auto in = make_inputs(B, T, H, K, V, dtype, torch::kCUDA);
    // Raw q, k as the conv gives them: norms far from 1, one row of each all zeros (its norm is the epsilon's).
    auto f = torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA);
    in.q = (3 * torch::randn({B, T, H, K}, f)).to(dtype), in.k = (0.3 * torch::randn({B, T, H, K}, f)).to(dtype);
    in.q[0][T - 1][0].zero_(), in.k[0][0][H - 1].zero_();
    auto with_l2 = [](ops::Impl impl) {
      return [impl](const std::vector<torch::Tensor>& a) {
        return ops::gated_delta(a[0], a[1], a[2], a[3], a[4], a[5], impl, /*qk_l2norm=*/true);
      };
    };
    auto ker = run(in, with_l2(ops::Impl::Kernel));
    const bool f32 = dtype == torch::kFloat;
    expect_kernel_close(name + " vs reference", run(in, with_l2(ops::Impl::Reference)), ker, f32 ? 1e-4 : 2e-2,
                        f32 ? 1e-4 : 5e-2);
    expect_kernel_close(name + " vs chunked", run(in, with_l2(ops::Impl::Chunked)), ker, f32 ? 1e-4 : 2e-2,
                        f32 ? 1e-4 : 5e-2);
  }
}

TEST_CASE("the gated_delta kernel: no initial state, only o or only S_T in the loss, strided inputs", "[gated_delta][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(8);
  auto in = make_inputs(2, 100, 2, 128, 128, torch::kFloat, torch::kCUDA);
  expect_kernel_close("with h0", run_reference(in), run_kernel(in), 1e-4, 1e-4);
  in.h0 = torch::Tensor();
  expect_kernel_close("no h0", run_reference(in), run_kernel(in), 1e-4, 1e-4);
  auto o_only = in, h_only = in;
  o_only.dh_T = torch::zeros_like(in.dh_T), h_only.dout = torch::zeros_like(in.dout);
  expect_kernel_close("o only", run_reference(o_only), run_kernel(o_only), 1e-4, 1e-4);
  expect_kernel_close("S_T only", run_reference(h_only), run_kernel(h_only), 1e-4, 1e-4);
  // Only one output used: the other's gradient never arrives (undefined), which the kernel reads as zero.
  for (int which = 0; which < 2; ++which) {
    INFO("only output " << which);
    std::vector<torch::Tensor> lr, lk;
    for (const auto* t : {&in.q, &in.k, &in.v, &in.g, &in.beta}) lr.push_back(test::leaf(*t)), lk.push_back(test::leaf(*t));
    auto outr = ops::gated_delta_reference(lr[0], lr[1], lr[2], lr[3], lr[4], torch::Tensor());
    auto outk = ops::gated_delta(lk[0], lk[1], lk[2], lk[3], lk[4], torch::Tensor(), ops::Impl::Kernel);
    auto w = which == 0 ? in.dout : in.dh_T;
    (outr[which] * w).sum().backward();
    (outk[which] * w).sum().backward();
    for (int i = 0; i < 5; ++i) {
      // S_T alone does not depend on q: the reference leaves q's gradient undefined, the kernel may give zeros.
      if (!lr[i].grad().defined()) {
        CHECK((!lk[i].grad().defined() || lk[i].grad().abs().max().item<double>() == 0));
        continue;
      }
      expect_close("only output grad " + kNames[2 + i], lr[i].grad(), lk[i].grad(), 1e-4);
    }
  }
  // Non-contiguous q, k, v (views into wider tensors, as the layer's narrow of the conv output gives them).
  auto wide = torch::randn({2, 100, 2, 3 * 128}, in.q.options());
  auto strided = in;
  strided.q = wide.narrow(3, 0, 128).copy_(in.q), strided.k = wide.narrow(3, 128, 128).copy_(in.k);
  strided.v = wide.narrow(3, 256, 128).copy_(in.v);
  REQUIRE(!strided.q.is_contiguous());
  auto ker = ops::gated_delta(strided.q, strided.k, strided.v, in.g, in.beta, torch::Tensor(), ops::Impl::Kernel);
  auto ref = ops::gated_delta_reference(in.q, in.k, in.v, in.g, in.beta, torch::Tensor());
  expect_close("strided o", ref[0], ker[0], 1e-4);
  expect_close("strided S_T", ref[1], ker[1], 1e-4);
}

TEST_CASE("the gated_delta kernel: a sequence split inside a chunk equals the whole, gradients included", "[gated_delta][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(9);
  auto in = make_inputs(2, 150, 2, 128, 64, torch::kFloat, torch::kCUDA);
  auto whole = run_kernel(in);
  expect_kernel_close("split 70+80", whole, run(in, split_at(70, ops::Impl::Kernel)), 1e-4, 1e-4);
}
