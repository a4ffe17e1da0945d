// Head split + RoPE: the reference against a scalar loop and finite differences (CPU), argument errors, and the
// CUDA kernel against the reference, forward and the gradient (GPU).
#include <array>
#include <cmath>

#include "ops/rope/rope.h"
#include "tests/support/op_checks.h"

using namespace elman;
using test::expect_all_close;
using test::expect_close;

namespace {
// Forward + backward of q . gq + k . gk + v . gv (unused parts left out of the loss): {q, k, v, dqkv}.
std::vector<torch::Tensor> run(const torch::Tensor& qkv_in, int64_t heads, const std::vector<torch::Tensor>& g,
                               ops::Impl impl, std::array<bool, 3> use = {true, true, true}) {
  auto qkv = test::leaf(qkv_in);
  auto o = ops::rope_qkv(qkv, heads, 10000.0, impl);
  auto loss = torch::zeros({}, g[0].options());
  for (int i = 0; i < 3; ++i)
    if (use[i]) loss = loss + (o[i].to(g[i].scalar_type()) * g[i]).sum();
  loss.backward();
  return {o[0].detach(), o[1].detach(), o[2].detach(), qkv.grad()};
}
const std::vector<std::string> kNames = {"q", "k", "v", "dqkv"};
std::vector<torch::Tensor> grads_like(int64_t B, int64_t H, int64_t T, int64_t hd, const torch::TensorOptions& o) {
  return {torch::randn({B, H, T, hd}, o), torch::randn({B, H, T, hd}, o), torch::randn({B, H, T, hd}, o)};
}
}  // namespace

TEST_CASE("rope_qkv_reference rotates q and k by position and copies v", "[rope]") {
  torch::manual_seed(1);
  const int64_t B = 2, T = 5, H = 3, hd = 6;
  auto qkv = torch::randn({B, T, 3 * H * hd}, torch::kDouble);
  auto o = ops::rope_qkv_reference(qkv, H, 100.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < hd / 2; ++i) {
          const double a = t * std::pow(100.0, -2.0 * i / hd), c = std::cos(a), s = std::sin(a);
          for (int part = 0; part < 2; ++part) {
            const double x1 = qkv[b][t][(part * H + h) * hd + i].item<double>();
            const double x2 = qkv[b][t][(part * H + h) * hd + i + hd / 2].item<double>();
            CHECK(std::abs(o[part][b][h][t][i].item<double>() - (x1 * c - x2 * s)) < 1e-6);
            CHECK(std::abs(o[part][b][h][t][i + hd / 2].item<double>() - (x1 * s + x2 * c)) < 1e-6);
          }
          CHECK(o[2][b][h][t][i].item<double>() == qkv[b][t][(2 * H + h) * hd + i].item<double>());
        }
}

TEST_CASE("rope_qkv_reference gradient matches finite differences in fp64", "[rope]") {
  torch::manual_seed(2);
  const int64_t B = 2, T = 4, H = 2, hd = 4;
  auto qkv = torch::randn({B, T, 3 * H * hd}, torch::kDouble);
  auto g = grads_like(B, H, T, hd, torch::TensorOptions().dtype(torch::kDouble));
  auto loss = [&] {
    auto o = ops::rope_qkv_reference(qkv, H, 10000.0);
    return (o[0] * g[0]).sum() + (o[1] * g[1]).sum() + (o[2] * g[2]).sum();
  };
  expect_close("dqkv (fd)", test::numeric_grad(loss, qkv), run(qkv, H, g, ops::Impl::Reference)[3], 1e-7);
}

TEST_CASE("rope_qkv rejects bad arguments with one line", "[rope]") {
  auto qkv = torch::randn({1, 3, 18});
  test::require_error([&] { ops::rope_qkv(qkv, 2, 10000.0, ops::Impl::Reference); }, "even head_dim");
  test::require_error([&] { ops::rope_qkv(qkv.view({3, 18}), 1, 10000.0, ops::Impl::Reference); }, "must be [B, T");
  test::require_error([&] { ops::rope_qkv(qkv, 3, 10000.0, ops::Impl::Kernel); }, "CUDA");
}

TEST_CASE("rope_qkv kernel matches the reference: forward and gradient", "[rope][gpu]") {
  REQUIRE(torch::cuda::is_available());
  using Shape = std::array<int64_t, 4>;  // B, T, H, hd
  const auto sh = GENERATE(values<Shape>({{1, 1, 1, 2}, {3, 7, 2, 6}, {2, 65, 5, 64}, {1, 300, 3, 128}, {32, 512, 10, 64}}));
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const std::string name = "B" + std::to_string(sh[0]) + "-T" + std::to_string(sh[1]) + "-H" + std::to_string(sh[2]) +
                           "-hd" + std::to_string(sh[3]) + (dtype == torch::kFloat ? "-fp32" : "-bf16");
  SECTION(name) {
    torch::manual_seed(sh[1] * 7 + sh[3]);
    auto f = torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA);
    auto qkv = torch::randn({sh[0], sh[1], 3 * sh[2] * sh[3]}, f).to(dtype);
    auto g = grads_like(sh[0], sh[2], sh[1], sh[3], f);
    // fp32: the angle's pow and sincos in another order; bf16: both round the same fp32 values once.
    expect_all_close(name, kNames, run(qkv, sh[2], g, ops::Impl::Reference), run(qkv, sh[2], g, ops::Impl::Kernel),
                     dtype == torch::kFloat ? 1e-5 : 1e-2);
  }
}

TEST_CASE("rope_qkv kernel with unused outputs and a strided input", "[rope][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(4);
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA);
  auto g = grads_like(2, 3, 9, 8, f);
  auto qkv = torch::randn({9, 2, 72}, f).transpose(0, 1);  // [2, 9, 72], not contiguous
  for (std::array<bool, 3> use : {std::array<bool, 3>{true, false, false}, {false, true, false}, {false, false, true}})
    expect_all_close("use " + std::to_string(use[0]) + std::to_string(use[1]) + std::to_string(use[2]), kNames,
                     run(qkv, 3, g, ops::Impl::Reference, use), run(qkv, 3, g, ops::Impl::Kernel, use), 1e-5);
}
