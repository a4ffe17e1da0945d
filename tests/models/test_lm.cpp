// The LM scaffold with each mixer: shapes, initial loss, causality, kernel vs reference at equal weights.
#include <array>
#include <tuple>

#include <ATen/autocast_mode.h>

#include "models/lm.h"
#include "models/param.h"
#include "models/registry.h"
#include "tests/support/catch.h"
#include "tests/support/expect_close.h"
#include "tests/support/op_checks.h"

using namespace elman;

namespace {
models::ModelConfig tiny(const models::ModelSpec& spec, ops::Impl impl = ops::Impl::Reference) {
  models::ModelConfig c = spec.defaults;
  c.name = spec.name, c.dim = 64, c.depth = 2, c.impl = impl;
  if (spec.uses & models::kExpansion) c.expansion = 1.5;
  if (spec.uses & models::kHeads) c.heads = 4;
  return c;
}

// The E74 diagonal variants (spec 2.19) plus the stable linear one, as tiny LMs.
std::vector<models::ModelConfig> e74_diagonal_variants(ops::Impl impl = ops::Impl::Reference) {
  std::vector<models::ModelConfig> out;
  for (auto [update, projection, nonlinearity] : std::vector<std::array<const char*, 3>>{
           {"delta", "tiedkvq", "tanh"}, {"delta", "noz", "tanh"}, {"delta", "full", "tanh"},
           {"simple", "tiedkvq", "tanh"}, {"simple", "noz", "linear"}}) {
    auto c = tiny(models::find_model("e74"), impl);
    c.nstate = 12, c.state = "diagonal", c.update = update, c.projection = projection, c.nonlinearity = nonlinearity;
    out.push_back(c);
  }
  return out;
}
std::string variant_name(const models::ModelConfig& c) { return c.update + "-" + c.projection + "-" + c.nonlinearity; }

// The E74 reference's W_q and W_z, which its cell never reads (spec 2.19).
bool never_read(const std::string& key) {
  return key.size() > 4 && (key.substr(key.size() - 4) == ".w_q" || key.substr(key.size() - 4) == ".w_z");
}

// Builds LMs from `a` and `b` after the same seed (identical weights), runs both on the same B x T bytes on
// `device` and compares the losses (to loss_ratio) and every parameter's gradient (to 1e-4). Parameters for which
// `unread` is true must have no gradient on either side; any other must have one on both.
void expect_lms_agree(const std::string& name, const models::ModelConfig& a, const models::ModelConfig& b,
                      uint64_t seed, int64_t B, int64_t T, torch::Device device, double loss_ratio,
                      bool (*unread)(const std::string&) = nullptr) {
  torch::manual_seed(seed);
  models::LM la(a);
  torch::manual_seed(seed);
  models::LM lb(b);
  la->to(device), lb->to(device);
  auto tokens = torch::randint(0, 256, {B, T + 1}, torch::TensorOptions().dtype(torch::kLong).device(device));
  auto loss_a = la->loss(tokens.narrow(1, 0, T), tokens.narrow(1, 1, T));
  auto loss_b = lb->loss(tokens.narrow(1, 0, T), tokens.narrow(1, 1, T));
  loss_a.backward(), loss_b.backward();
  test::expect_close(name + " loss", loss_a, loss_b, loss_ratio);
  auto pa = la->named_parameters(), pb = lb->named_parameters();
  for (const auto& item : pa) {
    if (unread != nullptr && unread(item.key())) {
      INFO(name << " " << item.key());
      CHECK(!item.value().grad().defined());
      CHECK(!pb[item.key()].grad().defined());
      continue;
    }
    test::expect_close(name + " grad " + item.key(), item.value().grad(), pb[item.key()].grad(), 1e-4);
  }
}
}  // namespace

TEST_CASE("a fresh LM predicts bytes near uniformly", "[lm]") {
  for (const auto& spec : models::all_models()) {
    const auto& name = spec.name;
    torch::manual_seed(1);
    models::LM lm(tiny(spec));
    auto tokens = torch::randint(0, 256, {2, 33}, torch::kLong);
    auto logits = lm->forward(tokens);
    CHECK(logits.sizes() == torch::IntArrayRef({2, 33, 256}));
    const double loss = lm->loss(tokens.narrow(1, 0, 32), tokens.narrow(1, 1, 32)).item<double>();
    INFO(name << " initial loss " << loss);
    CHECK(std::abs(loss - std::log(256.0)) < 0.3);
  }
}

TEST_CASE("every model is causal: later bytes do not change earlier logits", "[lm]") {
  for (const auto& spec : models::all_models()) {
    const auto& name = spec.name;
    torch::manual_seed(2);
    models::LM lm(tiny(spec));
    lm->eval();  // fixed weights: in training mode spectral norm advances its power iteration each forward
    auto a = torch::randint(0, 256, {1, 40}, torch::kLong);
    auto b = a.clone();
    b.narrow(1, 25, 15).random_(0, 256);
    auto la = lm->forward(a), lb = lm->forward(b);
    INFO(name);
    CHECK(torch::allclose(la.narrow(1, 0, 25), lb.narrow(1, 0, 25), 1e-6, 1e-6));
    CHECK(!torch::allclose(la.narrow(1, 25, 15), lb.narrow(1, 25, 15)));
  }
}

TEST_CASE("every chunked-scan LM agrees with its reference LM at identical weights", "[lm]") {
  for (const auto& spec : models::all_models()) {
    if (!spec.chunked) continue;
    // T = 70: one full chunk of 64 and a partial one.
    expect_lms_agree(spec.name, tiny(spec, ops::Impl::Reference), tiny(spec, ops::Impl::Chunked), 4, 2, 70,
                     torch::kCPU, 1e-6);
  }
}

TEST_CASE("every kernel LM agrees with its reference LM at identical weights", "[lm][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const test::NoCudnnTf32 no_tf32;  // mamba2's and gdn's reference conv is torch::conv1d, their kernel conv fp32
  for (const auto& spec : models::all_models()) {
    if (spec.name == "gdn") continue;  // its kernel needs key head dim 128, beyond the tiny LM (tests/models/test_gdn.cpp)
    std::printf("%s\n", spec.name.c_str());
    expect_lms_agree(spec.name, tiny(spec, ops::Impl::Reference), tiny(spec, ops::Impl::Kernel), 3, 3, 64,
                     torch::kCUDA, 1e-5);
  }
}

TEST_CASE("the mamba2 and gdn kernel LMs (scan, short conv, gated norm) agree with their reference LMs at odd T",
          "[lm][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const test::NoCudnnTf32 no_tf32;
  // mamba2 at dim 128: d_inner 256, 4 heads, 512 conv channels; gdn at dim 256 with 2 heads: key dim 128 (its
  // kernel's), 1024 conv channels, per-head norms over 256 values of a gate read inside the projection.
  for (const auto& [name, dim, heads] : std::vector<std::tuple<std::string, int64_t, int64_t>>{{"mamba2", 128, 0},
                                                                                               {"gdn", 256, 2}}) {
    std::printf("%s\n", name.c_str());
    models::ModelConfig base = models::find_model(name).defaults;
    base.name = name, base.dim = dim, base.depth = 2, base.heads = heads;
    auto ker = base;
    ker.impl = ops::Impl::Kernel;
    base.impl = ops::Impl::Reference;
    // B 3, T 67: not a multiple of the scans' chunks or the conv kernel's runs of steps.
    expect_lms_agree(name, base, ker, 6, 3, 67, torch::kCUDA, 1e-5);
    // The conv and the gated norm write their input gradients into the projection's slots: the split's backward
    // copies only the pieces that LibTorch ops read (mamba2's dt; gdn's a and b), in every layer.
    models::LM lm(ker);
    lm->to(torch::kCUDA);
    auto tokens = torch::randint(0, 256, {2, 68}, torch::TensorOptions().dtype(torch::kLong).device(torch::kCUDA));
    auto loss = lm->loss(tokens.narrow(1, 0, 67), tokens.narrow(1, 1, 67));
    const int64_t before = ops::slot_copies();
    loss.backward();
    CHECK(ops::slot_copies() - before == ker.depth * (name == "mamba2" ? 1 : 2));
  }
}

TEST_CASE("the E74 diagonal LMs train every weight the cell reads, and only the reference's unused W_q, W_z get none", "[lm]") {
  for (const auto& cfg : e74_diagonal_variants()) {
    INFO(variant_name(cfg));
    torch::manual_seed(4);
    models::LM lm(cfg);
    auto tokens = torch::randint(0, 256, {2, 33}, torch::kLong);
    auto loss = lm->loss(tokens.narrow(1, 0, 32), tokens.narrow(1, 1, 32));
    CHECK(std::abs(loss.item<double>() - std::log(256.0)) < 0.3);
    loss.backward();
    int unused = 0;
    for (const auto& item : lm->named_parameters()) {
      INFO(item.key());
      if (never_read(item.key())) {
        CHECK(!item.value().grad().defined());
        ++unused;
      } else {
        REQUIRE(item.value().grad().defined());
        CHECK(item.value().grad().abs().sum().item<double>() > 0);
      }
    }
    CHECK(unused == cfg.depth * (cfg.projection == "full" ? 2 : cfg.projection == "noz" ? 1 : 0));
    // Causal, like every model.
    lm->eval();
    auto a = torch::randint(0, 256, {1, 40}, torch::kLong);
    auto b = a.clone();
    b.narrow(1, 25, 15).random_(0, 256);
    auto la = lm->forward(a), lb = lm->forward(b);
    CHECK(torch::allclose(la.narrow(1, 0, 25), lb.narrow(1, 0, 25), 1e-6, 1e-6));
    CHECK(!torch::allclose(la.narrow(1, 25, 15), lb.narrow(1, 25, 15)));
  }
}

TEST_CASE("the E74 diagonal kernel LMs agree with their reference LMs at identical weights", "[lm][gpu]") {
  REQUIRE(torch::cuda::is_available());
  auto ref_cfgs = e74_diagonal_variants(ops::Impl::Reference), ker_cfgs = e74_diagonal_variants(ops::Impl::Kernel);
  for (size_t i = 0; i < ref_cfgs.size(); ++i) {
    const auto name = variant_name(ref_cfgs[i]);
    std::printf("e74 diagonal %s\n", name.c_str());
    expect_lms_agree(name, ref_cfgs[i], ker_cfgs[i], 5, 3, 64, torch::kCUDA, 1e-5, never_read);
  }
}

TEST_CASE("E63m's raw key makes the gradient explode at init; the l2-normalised key (its default) does not", "[lm]") {
  // The measured cause of E63m's divergence (models/key_norm.h): with k = W_k u unnormalised, |k|^2 is of order D,
  // the backward recurrence through r = tanh(S k) is expansive, and the gradient grows with T and depth (at the
  // 100M config on CPU: 4.2e6 at T 64, 1.3e10 at T 256, against 59 and 24 with the l2 key).
  auto gnorm = [](const char* key) {
    auto c = models::find_model("e63m").defaults;
    c.name = "e63m", c.dim = 256, c.depth = 8, c.key = key;
    torch::manual_seed(5);
    models::LM lm(c);
    torch::manual_seed(6);
    auto tokens = torch::randint(0, 256, {1, 129}, torch::kLong);
    lm->loss(tokens.narrow(1, 0, 128), tokens.narrow(1, 1, 128)).backward();
    double sq = 0;
    for (const auto& p : lm->parameters()) sq += p.grad().pow(2).sum().item<double>();
    return std::sqrt(sq);
  };
  const double raw = gnorm("raw"), l2 = gnorm("l2");
  INFO("grad norm at init: raw key " << raw << ", l2 key " << l2);
  CHECK(std::isfinite(l2));
  CHECK(l2 < 100);
  CHECK(raw > 100 * l2);
}

TEST_CASE("E70's decay is trained (our decision; the reference passed it as a constant), through clamp's gradient", "[lm]") {
  auto cfg = tiny(models::find_model("e70"));
  cfg.nstate = 8;
  torch::manual_seed(6);
  models::LM lm(cfg);
  auto tokens = torch::randint(0, 256, {2, 33}, torch::kLong);
  auto decays = [&] {
    std::vector<torch::Tensor> out;
    for (const auto& item : lm->named_parameters())
      if (item.key().size() > 6 && item.key().substr(item.key().size() - 6) == ".decay") out.push_back(item.value());
    return out;
  };
  REQUIRE(decays().size() == static_cast<size_t>(cfg.depth));
  lm->loss(tokens.narrow(1, 0, 32), tokens.narrow(1, 1, 32)).backward();
  for (const auto& d : decays()) {
    CHECK(d.numel() == 1);
    CHECK(std::abs(d.item<double>() - 0.9) < 1e-7);
    REQUIRE(d.grad().defined());
    CHECK(d.grad().abs().item<double>() > 0);
  }
  // Past the clamp (lambda = 0.999) the gradient is zero, as autograd's clamp gives it.
  lm->zero_grad();
  {
    torch::NoGradGuard no_grad;
    for (auto& d : decays()) d.fill_(1.5);
  }
  lm->loss(tokens.narrow(1, 0, 32), tokens.narrow(1, 1, 32)).backward();
  for (const auto& d : decays()) CHECK(d.grad().abs().item<double>() == 0);
}

TEST_CASE("split_linear equals linear then split, in value and gradients, with and without a padded weight", "[lm]") {
  for (const int64_t rows : {24, 29}) {  // 29 rows: the weight is padded to 32
    INFO(rows << " rows");
    torch::manual_seed(5);
    const auto x = torch::randn({3, 7, 16}, torch::kDouble).requires_grad_(true);
    const auto w = torch::randn({rows, 16}, torch::kDouble).requires_grad_(true);
    const std::vector<int64_t> sizes{rows - 9, 6, 3};
    const auto ours = models::split_linear(x, w, sizes).pieces;
    const auto want = torch::linear(x, w).split_with_sizes(sizes, -1);
    REQUIRE(ours.size() == 3);
    auto loss = [](const std::vector<torch::Tensor>& p) { return (p[0].sin().sum() + p[1].square().sum() * 2 + p[2].sum()); };
    const auto g_ours = torch::autograd::grad({loss(ours)}, {x, w});
    const auto g_want = torch::autograd::grad({loss(want)}, {x, w});
    for (size_t i = 0; i < 3; ++i) {
      CHECK(ours[i].sizes() == want[i].sizes());
      CHECK(torch::allclose(ours[i], want[i], 1e-12, 1e-12));
    }
    CHECK(torch::allclose(g_ours[0], g_want[0], 1e-12, 1e-12));
    CHECK(torch::allclose(g_ours[1], g_want[1], 1e-12, 1e-12));
  }
}

// models::linear under bf16 autocast: products in bf16 like torch::linear, the input's gradient in the input's
// dtype, and the weight's gradient in fp32 straight from its GEMM, at least as close to the fp64 truth as
// autocast's bf16-rounded one; split_linear's padded weight (29 rows) too.
TEST_CASE("linear under autocast writes the weight's gradient in fp32 from its GEMM", "[lm][gpu]") {
  REQUIRE(torch::cuda::is_available());
  for (const int64_t rows : {200, 29}) {
    INFO(rows << " rows");
    torch::manual_seed(6);
    const auto o = torch::TensorOptions().device(torch::kCUDA);
    const auto x = torch::randn({3, 37, 96}, o).requires_grad_(true), w = torch::randn({rows, 96}, o).requires_grad_(true);
    const auto dy = torch::randn({3, 37, rows}, o);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    const auto ours =
        rows % 8 ? models::split_linear(x, w, {rows - 5, 5}).pieces : std::vector<torch::Tensor>{models::linear(x, w)};
    const auto theirs = torch::linear(x, w);
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    at::autocast::clear_cache();
    const auto y = torch::cat(ours, -1);
    CHECK(y.scalar_type() == torch::kBFloat16);
    test::expect_close("y", theirs.to(torch::kDouble), y.to(torch::kDouble), 1e-2);  // bf16 GEMMs alike
    const auto g = torch::autograd::grad({y}, {x, w}, {dy.to(torch::kBFloat16)});
    const auto g_theirs = torch::autograd::grad({theirs}, {x, w}, {dy.to(torch::kBFloat16)});
    CHECK(g[0].scalar_type() == torch::kFloat);
    CHECK(g[1].scalar_type() == torch::kFloat);
    // fp64 truth from the same bf16-rounded operands
    const auto xd = x.detach().to(torch::kBFloat16).to(torch::kDouble), wd = w.detach().to(torch::kBFloat16).to(torch::kDouble);
    const auto dyd = dy.to(torch::kBFloat16).to(torch::kDouble);
    const auto dw_true = dyd.reshape({-1, rows}).t().mm(xd.reshape({-1, 96}));
    test::expect_close("dx", dyd.matmul(wd), g[0], 1e-2);
    test::expect_close("dw (ours, fp32 out)", dw_true, g[1], 1e-5);
    CHECK((g[1] - dw_true).abs().max().item<double>() <= (g_theirs[1] - dw_true).abs().max().item<double>());
  }
}
