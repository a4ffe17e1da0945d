// Gated RMSNorm (Mamba2's GateThenNorm, GatedDeltaNet's NormThenGate): the reference against a scalar loop and
// finite differences (CPU, fp64), argument errors, and the CUDA kernel against the reference, forward and every
// gradient, over awkward row lengths, per-head rows of a strided gate, dtype mixes, and its deterministic dw (GPU).
#include <array>
#include <cmath>
#include <string>

#include "ops/gated_norm/gated_norm.h"
#include "tests/support/op_checks.h"

using namespace elman;
using ops::GateOrder;
using test::expect_all_close;
using test::expect_close;
using test::require_error;

namespace {
// y [lead..., C] (a scan's output); z of y's shape, either a tensor of its own (zwidth 0) or, like GatedDeltaNet's
// per-head gate, the columns [offset, offset + H C) of a [steps, zwidth] projection zw viewed to y's shape (H the
// last lead dim). The tests take gradients with respect to zw, so z stays a strided view (a leaf copy of z itself
// would be contiguous); run() takes z as a piece of zw's split with its gradient slot, as the layers do.
struct Inputs {
  torch::Tensor y, zw, w, gn;  // gn: the loss's weights on n
  int64_t offset = 0, zwidth = 0;
  std::vector<int64_t> shape;
  torch::Tensor z_of(const torch::Tensor& zw_) const {
    return zwidth > 0 ? zw_.narrow(1, offset, shape[shape.size() - 2] * shape.back()).view(shape) : zw_;
  }
  torch::Tensor z() const { return z_of(zw); }
};

// w ~ 1 + N(0, 0.3); y and z ~ N(0, 4) (the gate's SiLU across its curved range).
Inputs make_inputs(std::vector<int64_t> lead, int64_t C, at::ScalarType ydt, at::ScalarType zdt, torch::Device dev,
                   int64_t offset = 0, int64_t zwidth = 0) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  Inputs in;
  in.shape = lead;
  in.shape.push_back(C);
  in.offset = offset, in.zwidth = zwidth;
  in.y = (2 * torch::randn(in.shape, f)).to(ydt);
  if (zwidth > 0) {
    int64_t steps = 1;
    for (size_t i = 0; i + 1 < lead.size(); ++i) steps *= lead[i];
    in.zw = (2 * torch::randn({steps, zwidth}, f)).to(zdt);
  } else {
    in.zw = (2 * torch::randn(in.shape, f)).to(zdt);
  }
  in.w = 1 + 0.3 * torch::randn({C}, f);
  in.gn = torch::randn(in.shape, f);
  return in;
}

// Forward + backward of (n . gn): {n, dy, dzw (z's gradient inside its projection, zero elsewhere), dw}.
std::vector<torch::Tensor> run(const Inputs& in, GateOrder order, at::ScalarType out, ops::Impl impl) {
  auto y = test::leaf(in.y), zw = test::leaf(in.zw), w = test::leaf(in.w);
  torch::Tensor z = zw;
  ops::GradSlot slot;
  if (in.zwidth > 0) {  // z is a piece of its projection's split, with the piece's gradient slot, as in the layers
    auto [piece, piece_slot] = test::slotted_columns(zw, in.offset, in.shape[in.shape.size() - 2] * in.shape.back());
    z = piece.view(in.shape), slot = piece_slot;
  }
  auto n = ops::gated_rms_norm(y, z, w, order, 1e-5, out, impl, slot);
  const auto lt = out == torch::kDouble ? torch::kDouble : torch::kFloat;
  const int64_t before = ops::slot_copies();
  (n.to(lt) * in.gn.to(lt)).sum().backward();
  // The kernel writes dz into its slot; the reference's, from LibTorch's autograd, is copied there.
  if (in.zwidth > 0) CHECK(ops::slot_copies() - before == (impl == ops::Impl::Kernel ? 0 : 1));
  return {n.detach(), test::grad_of(y), test::grad_of(zw), test::grad_of(w)};
}
const std::vector<std::string> kNames = {"n", "dy", "dz", "dw"};
const char* order_name(GateOrder o) { return o == GateOrder::GateThenNorm ? "gate-then-norm" : "norm-then-gate"; }
}  // namespace

TEST_CASE("gated_rms_norm_reference equals a scalar loop", "[gated_norm]") {
  torch::manual_seed(1);
  for (auto order : {GateOrder::GateThenNorm, GateOrder::NormThenGate}) {
    auto in = make_inputs({3}, 7, torch::kDouble, torch::kDouble, torch::kCPU);
    in.w = in.w.to(torch::kDouble);
    auto n = ops::gated_rms_norm_reference(in.y, in.z(), in.w, order, 1e-5, torch::kDouble);
    double worst = 0;
    for (int64_t r = 0; r < 3; ++r) {
      double u[7], s[7], ss = 0;
      for (int64_t c = 0; c < 7; ++c) {
        const double z = in.zw[r][c].item<double>();
        s[c] = z / (1 + std::exp(-z));
        u[c] = in.y[r][c].item<double>() * (order == GateOrder::GateThenNorm ? s[c] : 1.0);
        ss += u[c] * u[c];
      }
      const double rstd = 1 / std::sqrt(ss / 7 + 1e-5);
      for (int64_t c = 0; c < 7; ++c) {
        const double want = u[c] * rstd * in.w[c].item<double>() * (order == GateOrder::NormThenGate ? s[c] : 1.0);
        worst = std::max(worst, std::abs(n[r][c].item<double>() - want));
      }
    }
    INFO(order_name(order));
    CHECK(worst < 1e-12);
  }
}

TEST_CASE("gated_rms_norm_reference gradients match finite differences in fp64", "[gated_norm]") {
  torch::manual_seed(2);
  for (auto order : {GateOrder::GateThenNorm, GateOrder::NormThenGate}) {
    auto in = make_inputs({2, 2}, 5, torch::kDouble, torch::kDouble, torch::kCPU);
    in.w = in.w.to(torch::kDouble), in.gn = in.gn.to(torch::kDouble);
    auto loss = [&] {
      return (ops::gated_rms_norm_reference(in.y, in.z(), in.w, order, 1e-5, torch::kDouble) * in.gn).sum();
    };
    auto g = run(in, order, torch::kDouble, ops::Impl::Reference);
    const std::string o = order_name(order);
    expect_close(o + " dy (fd)", test::numeric_grad(loss, in.y), g[1], 1e-7);
    expect_close(o + " dz (fd)", test::numeric_grad(loss, in.zw), g[2], 1e-7);
    expect_close(o + " dw (fd)", test::numeric_grad(loss, in.w), g[3], 1e-7);
  }
}

TEST_CASE("gated_rms_norm rejects bad arguments with one line", "[gated_norm]") {
  auto in = make_inputs({2, 3}, 6, torch::kFloat, torch::kFloat, torch::kCPU);
  const auto ref = ops::Impl::Reference;
  const auto o = GateOrder::GateThenNorm;
  require_error([&] { ops::gated_rms_norm(in.y, in.zw.narrow(1, 0, 2), in.w, o, 1e-5, torch::kFloat, ref); },
                "z must have y's shape");
  require_error([&] { ops::gated_rms_norm(in.y, in.zw, in.w.narrow(0, 0, 5), o, 1e-5, torch::kFloat, ref); },
                "w must be a floating-point [6]");
  require_error([&] { ops::gated_rms_norm(in.y, in.zw, in.w, o, 1e-5, torch::kLong, ref); }, "out_dtype");
  require_error([&] { ops::gated_rms_norm(in.y, in.zw, in.w, o, 1e-5, torch::kFloat, ops::Impl::Chunked); },
                "no chunked");
  require_error([&] { ops::gated_rms_norm(in.y, in.zw, in.w, o, 1e-5, torch::kFloat, ops::Impl::Kernel); }, "CUDA");
}

TEST_CASE("gated_rms_norm kernel matches the reference: forward and every gradient", "[gated_norm][gpu]") {
  REQUIRE(torch::cuda::is_available());
  struct Case {
    std::vector<int64_t> lead;
    int64_t C, offset, zwidth;  // z = narrow(offset) of a [.., zwidth] projection, viewed per head (zwidth 0: none)
  };
  // Mamba2-like rows [B,T,C]: odd T with B paired, C not a multiple of 4 or of 32, the 100M d_inner 1792 and 2048,
  // rows of 516 and 1000 (one warp per row) and of 1032 (the row kernel with a partly idle last warp), a long row
  // (beyond the row kernel; fewer warps per block in the backward); GatedDeltaNet-like per-head rows [B,T,H,dv] of a gate
  // narrowed out of the projection (H 6, dv 256: the 100M layout, 4620 wide at 3072; and a misaligned small one).
  const auto c = GENERATE(values<Case>({{{1, 1}, 67, 0, 0},
                                        {{3, 3}, 130, 0, 0},
                                        {{1, 63}, 1792, 0, 0},
                                        {{3, 257}, 2048, 0, 0},
                                        {{1, 9}, 516, 0, 0},
                                        {{2, 33}, 1000, 0, 0},
                                        {{2, 17}, 1032, 0, 0},
                                        {{2, 5}, 12288, 0, 0},
                                        {{3, 63, 6}, 256, 3072, 4620},
                                        {{1, 257, 3}, 20, 1, 63}}));
  const auto order = GENERATE(GateOrder::GateThenNorm, GateOrder::NormThenGate);
  // (y, z, n) dtypes: fp32; the layers under autocast; a mix.
  using Dtypes = std::array<at::ScalarType, 3>;
  const auto dt = GENERATE(values<Dtypes>({{torch::kFloat, torch::kFloat, torch::kFloat},
                                           {torch::kBFloat16, torch::kBFloat16, torch::kBFloat16},
                                           {torch::kFloat, torch::kBFloat16, torch::kFloat}}));
  std::string name;
  for (auto s : c.lead) name += std::to_string(s) + "x";
  name += std::to_string(c.C) + (c.zwidth ? "-strided-" : "-") + order_name(order);
  for (auto t : dt) name += t == torch::kFloat ? "-f32" : "-bf16";
  SECTION(name) {
    torch::manual_seed(c.C * 3 + c.lead[1]);
    auto in = make_inputs(c.lead, c.C, dt[0], dt[1], torch::kCUDA, c.offset, c.zwidth);
    const bool all_fp32 = dt[0] == torch::kFloat && dt[1] == torch::kFloat && dt[2] == torch::kFloat;
    if (all_fp32) {
      expect_all_close(name, kNames, run(in, order, dt[2], ops::Impl::Reference),
                       run(in, order, dt[2], ops::Impl::Kernel), 1e-5);
    } else {
      // The kernel against the reference in fp32 on the same (bf16-rounded) inputs and cotangent, its outputs
      // rounded through the kernel's output dtypes: bf16 rounding (~2^-9) of n, dy, dz; dw summed in fp32 by both.
      auto k = run(in, order, dt[2], ops::Impl::Kernel);
      Inputs in32 = in;
      in32.y = in.y.to(torch::kFloat), in32.zw = in.zw.to(torch::kFloat);
      in32.gn = in.gn.to(dt[2]).to(torch::kFloat);
      auto r = run(in32, order, torch::kFloat, ops::Impl::Reference);
      r[0] = r[0].to(dt[2]), r[1] = r[1].to(dt[0]), r[2] = r[2].to(dt[1]);
      REQUIRE(k[0].scalar_type() == dt[2]);
      REQUIRE(k[1].scalar_type() == dt[0]);
      REQUIRE(k[2].scalar_type() == dt[1]);
      expect_all_close(name, kNames, r, k, 1e-2);
    }
  }
}

TEST_CASE("gated_rms_norm kernel: deterministic dw, non-contiguous y and gn, rows too long refused",
          "[gated_norm][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(5);
  // GatedDeltaNet's per-head rows (one warp per row) and Mamba2's 1792 (the row kernel).
  for (auto in : {make_inputs({4, 257, 6}, 256, torch::kBFloat16, torch::kBFloat16, torch::kCUDA, 3072, 4620),
                  make_inputs({8, 257}, 1792, torch::kBFloat16, torch::kBFloat16, torch::kCUDA)}) {
    for (auto order : {GateOrder::GateThenNorm, GateOrder::NormThenGate}) {
      auto a = run(in, order, torch::kBFloat16, ops::Impl::Kernel);
      auto b = run(in, order, torch::kBFloat16, ops::Impl::Kernel);
      for (size_t i = 0; i < a.size(); ++i) {
        INFO(order_name(order) << " C " << in.y.size(-1) << " " << kNames[i]);
        CHECK(torch::equal(a[i], b[i]));
      }
    }
  }
  auto in = make_inputs({3, 5, 4}, 64, torch::kFloat, torch::kFloat, torch::kCUDA);
  // y whose leading dims do not collapse to two strides (the launcher copies it), gn transposed.
  // A leaf copy keeps these strides (a permutation of a dense tensor is dense).
  in.y = torch::randn({4, 5, 3, 64}, in.y.options()).permute({2, 1, 0, 3});
  in.gn = in.gn.transpose(0, 1).contiguous().transpose(0, 1);
  for (auto order : {GateOrder::GateThenNorm, GateOrder::NormThenGate})
    expect_all_close(std::string("strided y, gn ") + order_name(order), kNames,
                     run(in, order, torch::kFloat, ops::Impl::Reference),
                     run(in, order, torch::kFloat, ops::Impl::Kernel), 1e-5);
  in = make_inputs({2}, 12289, torch::kFloat, torch::kFloat, torch::kCUDA);
  require_error([&] { run(in, GateOrder::GateThenNorm, torch::kFloat, ops::Impl::Kernel); }, "rows of up to 12288");
  in = make_inputs({2}, 8, torch::kDouble, torch::kFloat, torch::kCUDA);
  require_error([&] { run(in, GateOrder::GateThenNorm, torch::kFloat, ops::Impl::Kernel); }, "float32 or bfloat16 y");
}
