// The gated delta rule's chunk preparation on our CUDA kernels (ops::gated_delta_chunk_prep_kernel, the first step
// of Impl::Kernel) against the LibTorch chunked preparation it replaces (ops::gated_delta_chunk_prep): every output
// and every input gradient under random upstream gradients for all six outputs (GPU), and its argument checks (CPU).
// Kernel outputs start as NaN in the tests (tests/main.cpp turns poisoning on), so an unwritten element fails.
#include "ops/gated_delta/gated_delta.h"
#include "tests/support/catch.h"
#include "tests/support/expect_close.h"
#include "tests/support/gated_delta_inputs.h"
#include "tests/support/op_checks.h"

using namespace elman;
using test::expect_close;
using test::require_error;

namespace {
using PrepInputs = test::GatedDeltaInputs;

// The layer's inputs at its key head dim 128 on the GPU (tests/support/gated_delta_inputs.h).
PrepInputs make_prep_inputs(int64_t B, int64_t T, int64_t H, int64_t V, torch::Dtype dtype, double decay_scale) {
  return test::gated_delta_inputs(B, T, H, 128, V, dtype, torch::kCUDA, decay_scale);
}

const std::vector<std::string> kPrepNames = {"W", "Ut", "Qg", "Kl", "P", "decay", "dq", "dk", "dv", "dg", "dbeta"};

// One preparation (the kernel or the LibTorch chunked one) on inputs that require grad (leaves or views of leaves),
// forward and backward of sum_i (out_i . up[i]) over the six outputs; returns {W, Ut, Qg, Kl, P, decay}.
std::vector<torch::Tensor> prep_fwd_bwd(const PrepInputs& x, const std::vector<torch::Tensor>& up, bool kernel) {
  const auto c = kernel ? ops::gated_delta_chunk_prep_kernel(x.q, x.k, x.v, x.g, x.beta)
                        : ops::gated_delta_chunk_prep(x.q, x.k, x.v, x.g, x.beta, ops::kGatedDeltaChunk);
  std::vector<torch::Tensor> r = {c.W, c.Ut, c.Qg, c.Kl, c.P, c.decay};
  auto loss = torch::zeros({}, up[0].options());
  for (size_t i = 0; i < r.size(); ++i) loss = loss + (r[i].to(torch::kFloat) * up[i]).sum();
  loss.backward();
  return r;
}

// prep_fwd_bwd on leaf copies of `in`; returns {W, Ut, Qg, Kl, P, decay, dq, dk, dv, dg, dbeta}.
std::vector<torch::Tensor> run_prep(const PrepInputs& in, const std::vector<torch::Tensor>& up, bool kernel) {
  PrepInputs x{test::leaf(in.q), test::leaf(in.k), test::leaf(in.v), test::leaf(in.g), test::leaf(in.beta)};
  auto r = prep_fwd_bwd(x, up, kernel);
  for (const auto* t : {&x.q, &x.k, &x.v, &x.g, &x.beta}) r.push_back(t->grad());
  return r;
}

// Random upstream gradients shaped like the six outputs of `in`'s preparation.
std::vector<torch::Tensor> random_upstream(const PrepInputs& in) {
  const auto c = ops::gated_delta_chunk_prep(in.q, in.k, in.v, in.g, in.beta, ops::kGatedDeltaChunk);
  std::vector<torch::Tensor> up;
  for (const auto* t : {&c.W, &c.Ut, &c.Qg, &c.Kl, &c.P, &c.decay}) up.push_back(torch::randn_like(*t).to(torch::kFloat));
  return up;
}

// Kernel against the chunked preparation: outputs and dq, dk, dv within `ratio`, dg and dbeta (sums over the chunk)
// within `ratio_gb`. The kernel's W, Ut, Qg, Kl, P come in the operand type `op` (what the state pass multiplies),
// every other dtype must agree with the reference's.
void expect_prep_close(const std::string& tag, const std::vector<torch::Tensor>& ref, const std::vector<torch::Tensor>& got,
                       double ratio, double ratio_gb, torch::Dtype op) {
  REQUIRE(ref.size() == kPrepNames.size());
  REQUIRE(got.size() == kPrepNames.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    INFO(tag + " " + kPrepNames[i]);
    REQUIRE(got[i].defined());
    const bool operand = i < 5;  // W, Ut, Qg, Kl, P
    CHECK(got[i].scalar_type() == (operand ? op : ref[i].scalar_type()));
    CHECK(ref[i].sizes() == got[i].sizes());
    const bool gb = kPrepNames[i] == "dg" || kPrepNames[i] == "dbeta";
    expect_close(tag + " " + kPrepNames[i], ref[i], got[i].to(ref[i].scalar_type()), gb ? ratio_gb : ratio);
  }
}
}  // namespace

TEST_CASE("the gated_delta prep kernel rejects what it cannot run, naming the way out", "[gated_delta]") {
  auto f = torch::TensorOptions().dtype(torch::kFloat);
  auto q = torch::randn({1, 3, 1, 4}, f), v = torch::randn({1, 3, 1, 64}, f), g = -torch::rand({1, 3, 1}, f);
  require_error([&] { ops::gated_delta_chunk_prep_kernel(q, q, v, g, g.neg()); },
                "supports key head dim 128 and value head dim a multiple of 64, got K 4, V 64; use --impl chunked");
  auto q128 = torch::randn({1, 3, 1, 128}, f);
  require_error([&] { ops::gated_delta_chunk_prep_kernel(q128, q128, v.narrow(3, 0, 32), g, g.neg()); },
                "got K 128, V 32; use --impl chunked");
  // The right sizes on CPU tensors: the kernel cannot run here (a CPU build, or CPU tensors).
  require_error([&] { ops::gated_delta_chunk_prep_kernel(q128, q128, v, g, g.neg()); },
                "use the reference implementation");
}

TEST_CASE("the gated_delta prep kernel matches the chunked preparation: every output and input gradient", "[gated_delta][gpu]") {
  REQUIRE(torch::cuda::is_available());
  // (T, B) pairs instead of the full product: one step, just below, at and just above one chunk, four chunks + 1.
  using Pair = std::pair<int64_t, int64_t>;
  const auto tb = GENERATE(values<Pair>({{1, 3}, {63, 1}, {64, 3}, {65, 1}, {257, 3}}));  // (T, B)
  const auto H = GENERATE(values<int64_t>({1, 2}));
  const auto V = GENERATE(values<int64_t>({64, 256}));
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const auto decay = GENERATE(values<double>({1.0, 10.0}));  // the layer's initial range; 10x stronger
  const int64_t T = tb.first, B = tb.second;
  const std::string name = "prep-T" + std::to_string(T) + "-B" + std::to_string(B) + "-H" + std::to_string(H) +
                           "-V" + std::to_string(V) + (dtype == torch::kFloat ? "-fp32" : "-bf16") + "-decay" +
                           std::to_string(static_cast<int>(decay));
  SECTION(name) {
    std::printf("%s\n", name.c_str());
    torch::manual_seed(T * 10 + B + V + H + static_cast<int64_t>(decay));
    const auto in = make_prep_inputs(B, T, H, V, dtype, decay);
    const auto up = random_upstream(in);
    // fp32: the same fp32 math in another order (a forward substitution instead of LibTorch's triangular solve,
    // FMA products). bf16: the chunked preparation computes in fp32 from the bf16 inputs; the kernel multiplies
    // bf16 operands (T, R_W, R_U, the gradients) on tensor cores.
    const bool f32 = dtype == torch::kFloat;
    expect_prep_close(name, run_prep(in, up, false), run_prep(in, up, true), f32 ? 1e-4 : 2e-2, f32 ? 1e-4 : 5e-2,
                      dtype);
  }
}

TEST_CASE("the gated_delta prep kernel: the layer's strided fp32 q, k with bf16 v, and deterministic gradients", "[gated_delta][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(12);
  constexpr int64_t B = 2, T = 100, H = 2, K = 128, V = 128;
  const auto in = make_prep_inputs(B, T, H, V, torch::kFloat, 1.0);
  const auto up = random_upstream(in);
  // The layer hands over q, k (fp32, from the L2 norm) and v as narrows of wider tensors (v bf16 under autocast):
  // run the kernel on such views of wider leaves, whose gradients hold dq, dk, dv at the views' places.
  auto strided = [&](torch::Dtype vdtype) {
    auto qk = torch::zeros({B, T, H, 2 * K + 16}, in.q.options());
    qk.narrow(3, 0, K).copy_(in.q), qk.narrow(3, K + 16, K).copy_(in.k);
    auto vw = torch::zeros({B, T, H, V + 64}, in.v.options().dtype(vdtype));
    vw.narrow(3, 64, V).copy_(in.v);
    qk.requires_grad_(true), vw.requires_grad_(true);
    PrepInputs x{qk.narrow(3, 0, K), qk.narrow(3, K + 16, K), vw.narrow(3, 64, V), test::leaf(in.g), test::leaf(in.beta)};
    REQUIRE(!x.q.is_contiguous());
    REQUIRE(!x.v.is_contiguous());
    auto r = prep_fwd_bwd(x, up, true);
    for (const auto& t : {qk.grad().narrow(3, 0, K), qk.grad().narrow(3, K + 16, K), vw.grad().narrow(3, 64, V),
                          x.g.grad(), x.beta.grad()})
      r.push_back(t);
    return r;
  };
  expect_prep_close("strided fp32", run_prep(in, up, false), strided(torch::kFloat), 1e-4, 1e-4, torch::kFloat);
  // fp32 q, k and bf16 v: bf16 operands; the reference reads the same bf16 v.
  auto ref_in = in;
  ref_in.v = in.v.to(torch::kBFloat16);
  const auto mixed = strided(torch::kBFloat16);
  expect_prep_close("fp32 q k, bf16 v", run_prep(ref_in, up, false), mixed, 2e-2, 5e-2, torch::kBFloat16);
  // One block owns each (batch, chunk, head) tile of every gradient: two runs agree bit for bit.
  const auto again = strided(torch::kBFloat16);
  for (size_t i = 0; i < mixed.size(); ++i) {
    INFO(kPrepNames[i]);
    CHECK(torch::equal(mixed[i], again[i]));
  }
}
