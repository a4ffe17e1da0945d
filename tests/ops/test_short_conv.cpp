// Depthwise causal short conv + SiLU: the reference against an independent scalar loop and finite differences
// (CPU, fp64), argument errors, and the CUDA kernel against the reference, forward and every gradient, over
// awkward shapes, widths, strided inputs, fp32 and bf16, and its deterministic weight gradients (GPU).
#include <cmath>
#include <string>

#include "ops/short_conv/short_conv.h"
#include "tests/support/op_checks.h"

using namespace elman;
using test::expect_all_close;
using test::expect_close;
using test::require_error;

namespace {
// x is the narrow [B,T,C] at column `offset` of a wider projection xw, as the layers read it; the tests take
// gradients with respect to xw, so x stays a strided view (a leaf copy of x itself would be contiguous).
struct Inputs {
  torch::Tensor xw, w, bias, gy;  // bias may be undefined; gy: the loss's weights on y
  int64_t offset = 0, C = 0;
  torch::Tensor x() const { return xw.narrow(2, offset, C); }
};

// xw [B,T,C + extra] (extra 0: x is all of it); w at Conv1d's init scale, bias likewise (or none).
Inputs make_inputs(int64_t B, int64_t T, int64_t C, int64_t W, bool with_bias, torch::Dtype dtype, torch::Device dev,
                   int64_t offset = 0, int64_t extra = 0) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  Inputs in;
  in.xw = torch::randn({B, T, C + extra}, f).to(dtype), in.offset = offset, in.C = C;
  in.w = torch::randn({C, 1, W}, f) / std::sqrt(static_cast<double>(W));
  if (with_bias) in.bias = 0.5 * torch::randn({C}, f);
  in.gy = torch::randn({B, T, C}, f).to(dtype);
  return in;
}

// Forward + backward of (y . gy): {y, dxw (x's gradient inside the projection, zero elsewhere), dw, dbias}.
std::vector<torch::Tensor> run(const Inputs& in, bool silu, ops::Impl impl) {
  auto xw = test::leaf(in.xw), w = test::leaf(in.w), bias = test::leaf(in.bias);
  auto y = ops::short_conv(xw.narrow(2, in.offset, in.C), w, bias, silu, impl);
  const auto lt = in.gy.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  (y.to(lt) * in.gy.to(lt)).sum().backward();
  return {y.detach(), test::grad_of(xw), test::grad_of(w), test::grad_of(bias)};
}
const std::vector<std::string> kNames = {"y", "dx", "dw", "dbias"};
}  // namespace

TEST_CASE("short_conv_reference equals a scalar loop", "[short_conv]") {
  torch::manual_seed(1);
  for (int64_t W : {1, 3, 4}) {
    for (bool silu : {true, false}) {
      const int64_t B = 2, T = 6, C = 5;
      auto in = make_inputs(B, T, C, W, /*with_bias=*/W != 3, torch::kDouble, torch::kCPU, 2, 4);
      in.w = in.w.to(torch::kDouble);
      if (in.bias.defined()) in.bias = in.bias.to(torch::kDouble);
      auto y = ops::short_conv_reference(in.x(), in.w, in.bias, silu);
      REQUIRE(y.sizes() == torch::IntArrayRef({B, T, C}));
      const auto xv = in.x();
      auto x = xv.accessor<double, 3>(), w = in.w.accessor<double, 3>(), ya = y.accessor<double, 3>();
      double worst = 0;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t c = 0; c < C; ++c) {
            double a = in.bias.defined() ? in.bias[c].item<double>() : 0.0;
            for (int64_t i = 0; i < W; ++i) {
              const int64_t s = t - (W - 1) + i;
              if (s >= 0) a += w[c][0][i] * x[b][s][c];
            }
            const double want = silu ? a / (1 + std::exp(-a)) : a;
            worst = std::max(worst, std::abs(ya[b][t][c] - want));
          }
      INFO("W " << W << " silu " << silu);
      CHECK(worst < 1e-12);
    }
  }
}

TEST_CASE("short_conv_reference gradients match finite differences in fp64", "[short_conv]") {
  torch::manual_seed(2);
  auto in = make_inputs(2, 5, 3, 4, true, torch::kDouble, torch::kCPU);
  in.w = in.w.to(torch::kDouble), in.bias = in.bias.to(torch::kDouble);
  auto loss = [&] { return (ops::short_conv_reference(in.x(), in.w, in.bias, true) * in.gy).sum(); };
  auto g = run(in, true, ops::Impl::Reference);
  expect_close("dx (fd)", test::numeric_grad(loss, in.xw), g[1], 1e-7);
  expect_close("dw (fd)", test::numeric_grad(loss, in.w), g[2], 1e-7);
  expect_close("dbias (fd)", test::numeric_grad(loss, in.bias), g[3], 1e-7);
}

TEST_CASE("short_conv rejects bad arguments with one line", "[short_conv]") {
  auto in = make_inputs(2, 4, 6, 4, true, torch::kFloat, torch::kCPU);
  const auto ref = ops::Impl::Reference;
  require_error([&] { ops::short_conv(in.x()[0], in.w, in.bias, true, ref); }, "x must be [B,T,C]");
  require_error([&] { ops::short_conv(in.x(), in.w.view({6, 4}), in.bias, true, ref); }, "w must be [C,1,W]");
  require_error([&] { ops::short_conv(in.x(), in.w.narrow(0, 0, 5), in.bias, true, ref); }, "w must be [C,1,W]");
  require_error([&] { ops::short_conv(in.x(), in.w, in.bias.narrow(0, 0, 5), true, ref); }, "bias must be");
  require_error([&] { ops::short_conv(in.x(), in.w, in.bias, true, ops::Impl::Chunked); }, "no chunked");
  require_error([&] { ops::short_conv(in.x(), in.w, in.bias, true, ops::Impl::Kernel); }, "CUDA");
}

TEST_CASE("short_conv kernel matches the reference: forward and every gradient", "[short_conv][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const test::NoCudnnTf32 no_tf32;
  struct Case {
    int64_t B, T, C, W;
    bool bias, silu;
    int64_t offset, extra;  // x = narrow(offset, C) of a [B,T,C+extra] projection
  };
  // Odd T with B paired, C not a multiple of 4 (67, 130: vector widths 1 and 2), the layers' widths (Mamba2's
  // 2048-channel xBC inside its 3868-wide projection at 1792, GatedDeltaNet's 3072 at the start of 4620), every W.
  const auto c = GENERATE(values<Case>({{1, 1, 67, 4, true, true, 0, 0},
                                        {3, 3, 130, 4, false, true, 1, 3},
                                        {1, 63, 67, 3, true, false, 0, 0},
                                        {3, 257, 130, 4, true, true, 0, 0},
                                        {2, 64, 96, 2, true, true, 4, 12},
                                        {3, 65, 33, 1, true, true, 0, 0},
                                        {2, 257, 2048, 4, true, true, 1792, 1820},
                                        {3, 63, 3072, 4, false, true, 0, 1548}}));
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const std::string name = "B" + std::to_string(c.B) + "-T" + std::to_string(c.T) + "-C" + std::to_string(c.C) +
                           "-W" + std::to_string(c.W) + (c.bias ? "-bias" : "") + (c.silu ? "-silu" : "") +
                           (c.extra ? "-strided" : "") + (dtype == torch::kFloat ? "-f32" : "-bf16");
  SECTION(name) {
    torch::manual_seed(c.T * 7 + c.C);
    auto in = make_inputs(c.B, c.T, c.C, c.W, c.bias, dtype, torch::kCUDA, c.offset, c.extra);
    if (dtype == torch::kFloat) {
      // fp32 on both sides, the reference through cuDNN/ATen's conv in another summation order.
      expect_all_close(name, kNames, run(in, c.silu, ops::Impl::Reference), run(in, c.silu, ops::Impl::Kernel), 1e-5);
    } else {
      // The kernel on bf16 x and gy against the fp32 reference on the same bf16 values, its y rounded through bf16:
      // bf16 rounding of y and dx (~2^-9 relative), dw and dbias summed in fp32 on both sides.
      auto k = run(in, c.silu, ops::Impl::Kernel);
      Inputs in32 = in;
      in32.xw = in.xw.to(torch::kFloat), in32.gy = in.gy.to(torch::kFloat);
      auto r = run(in32, c.silu, ops::Impl::Reference);
      r[0] = r[0].to(torch::kBFloat16), r[1] = r[1].to(torch::kBFloat16);
      REQUIRE(k[0].scalar_type() == torch::kBFloat16);
      REQUIRE(k[1].scalar_type() == torch::kBFloat16);
      expect_all_close(name, kNames, r, k, 1e-2);
    }
  }
}

TEST_CASE("short_conv kernel: deterministic weight gradients, non-contiguous gy, W > 4 refused", "[short_conv][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const test::NoCudnnTf32 no_tf32;
  torch::manual_seed(5);
  auto in = make_inputs(3, 257, 200, 4, true, torch::kBFloat16, torch::kCUDA, 8, 24);
  auto a = run(in, true, ops::Impl::Kernel), b = run(in, true, ops::Impl::Kernel);
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(kNames[i]);
    CHECK(torch::equal(a[i], b[i]));
  }
  // gy as a transposed view (the backward makes its own contiguous copy), and x with channels not adjacent.
  in = make_inputs(2, 40, 24, 4, true, torch::kFloat, torch::kCUDA);
  in.gy = in.gy.transpose(1, 2).contiguous().transpose(1, 2);
  in.xw = in.xw.transpose(1, 2).contiguous().transpose(1, 2);  // a leaf copy keeps these strides (dense)
  expect_all_close("strided gy and x", kNames, run(in, true, ops::Impl::Reference), run(in, true, ops::Impl::Kernel),
                   1e-5);
  in = make_inputs(1, 8, 16, 5, true, torch::kFloat, torch::kCUDA);
  require_error([&] { run(in, true, ops::Impl::Kernel); }, "widths W <= 4");
  require_error([&] { ops::short_conv(in.x().to(torch::kDouble), in.w, in.bias, true, ops::Impl::Kernel); },
                "float32 or bfloat16");
}

TEST_CASE("short_conv kernel writes y in pieces, reads their gradients where they are and writes dx into its slot",
          "[short_conv][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const test::NoCudnnTf32 no_tf32;
  struct Case {
    int64_t B, T, offset, width;  // x: columns [offset, offset + sum(sizes)) of a [B,T,width] projection
    std::vector<int64_t> sizes;
    int unused;  // a piece that the loss leaves out (its gradient undefined), or -1
  };
  // GatedDeltaNet's q, k, v (C 3072 at the start of its 4624-wide projection), Mamba2's x, B, C (2048 at 1792 of
  // 3872), and pieces of 2- and 1-element vectors, one of them unused.
  const auto c = GENERATE(values<Case>({{2, 130, 0, 4624, {768, 768, 1536}, -1},
                                        {3, 65, 1792, 3872, {1792, 128, 128}, -1},
                                        {1, 257, 4, 140, {66, 64}, 0},
                                        {3, 33, 1, 70, {30, 4, 33}, 1}}));
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  int64_t C = 0;
  for (int64_t n : c.sizes) C += n;
  const std::string name = "C" + std::to_string(C) + "-pieces" + std::to_string(c.sizes.size()) +
                           (c.unused >= 0 ? "-unused" + std::to_string(c.unused) : "") +
                           (dtype == torch::kFloat ? "-f32" : "-bf16");
  SECTION(name) {
    torch::manual_seed(C + c.T);
    auto in = make_inputs(c.B, c.T, C, 4, true, dtype, torch::kCUDA, c.offset, c.width - C);
    // Forward + backward of sum_i (y_i . gy_i) over the used pieces: {y (pieces concatenated), dxw, dw, dbias}.
    auto go = [&](ops::Impl impl, const Inputs& at, int64_t* copies) {
      auto xw = test::leaf(at.xw), w = test::leaf(at.w), bias = test::leaf(at.bias);
      const auto [x, slot] = test::slotted_columns(xw, c.offset, C);
      auto ys = ops::short_conv_split(x, w, bias, true, c.sizes, impl, slot);
      REQUIRE(ys.size() == c.sizes.size());
      const auto gy = at.gy.split_with_sizes(c.sizes, -1);
      torch::Tensor loss = torch::zeros({}, xw.options().dtype(torch::kFloat));
      for (size_t i = 0; i < ys.size(); ++i) {
        if (impl == ops::Impl::Kernel) CHECK(ys[i].is_contiguous());
        if (static_cast<int>(i) != c.unused) loss = loss + (ys[i].to(torch::kFloat) * gy[i].to(torch::kFloat)).sum();
      }
      const int64_t before = ops::slot_copies();
      loss.backward();
      *copies = ops::slot_copies() - before;
      return std::vector<torch::Tensor>{torch::cat(ys, -1).detach(), xw.grad(), w.grad(), bias.grad()};
    };
    int64_t copies = -1, ref_copies = -1;
    auto k = go(ops::Impl::Kernel, in, &copies);
    CHECK(copies == 0);  // dx went into its slot: nothing was copied
    if (dtype == torch::kFloat) {
      expect_all_close(name, kNames, go(ops::Impl::Reference, in, &ref_copies), k, 1e-5);
    } else {
      Inputs in32 = in;
      in32.xw = in.xw.to(torch::kFloat), in32.gy = in.gy.to(torch::kFloat);
      auto r = go(ops::Impl::Reference, in32, &ref_copies);
      r[0] = r[0].to(torch::kBFloat16), r[1] = r[1].to(torch::kBFloat16);
      expect_all_close(name, kNames, r, k, 1e-2);
    }
    CHECK(ref_copies == 1);  // the reference's dx, from LibTorch's autograd, is copied into place
  }
}
