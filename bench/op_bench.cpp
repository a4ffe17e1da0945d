// elman-opbench: times one recurrent op alone (forward, and forward + backward) on the GPU with CUDA events,
// for tuning kernels; scripts/bench_ops.sh runs the usual set. The training-step throughput of whole models
// is scripts/bench.sh's job.
//
// Usage: elman-opbench OP [--B 32] [--T 512] [--D 1280] [--dtype bf16|f32] [--impl kernel|reference|chunked]
//                         [--iters 10]
//   OP: dense-tanh | dense-linear | dense-gated | diag-e61 .. diag-e68 | matrix-e70 .. matrix-e73 | sparse-b4k2 |
//   sparse-b16k4 | sparse-b32k8 | slots-n8 | gdn | ssd | short_conv | gated_norm | gated_norm_gdn (see ops() below; the
//   matrix cases take --D as n_state; the sparse_block cases take their widths from the E87 level name and ignore --D;
//   gdn is the gated delta rule at the 100M heads, H 6, K 128, V 256, and ignores --D; ssd takes --D as the number of
//   heads, with Mamba2's headdim 64 and d_state 128; --impl chunked is their LibTorch chunked scans; short_conv is the
//   layers' conv + SiLU over --D channels (default 2048, Mamba2's at 100M), gated_norm Mamba2's gated norm over rows of
//   --D (default 1792, its d_inner at 100M), gated_norm_gdn GatedDeltaNet's per-head norm at H 6, V 256, ignoring --D).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>

#include "ops/dense_elman/dense_elman.h"
#include "ops/gated_delta/gated_delta.h"
#include "ops/gated_diag/gated_diag.h"
#include "ops/gated_norm/gated_norm.h"
#include "ops/matrix_elman/matrix_elman.h"
#include "ops/short_conv/short_conv.h"
#include "ops/slot_matrix/slot_matrix.h"
#include "ops/sparse_block/sparse_block.h"
#include "ops/ssd/ssd.h"

namespace {
using elman::ops::Impl;

struct Shape {
  int64_t B = 32, T = 512, D = 1280;
  torch::Dtype dtype = torch::kBFloat16;
  Impl impl = Impl::Kernel;
};

// An op under test: makes its inputs (leaf tensors that need grad) and runs the forward, returning the
// tensors whose sum is back-propagated.
struct OpCase {
  std::function<std::vector<torch::Tensor>(const Shape&)> inputs;
  std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&, const Shape&)> forward;
  int64_t default_D = 0;  // --D when the command line gives none (0: Shape's)
};

torch::Tensor leaf(torch::Tensor t) { return t.requires_grad_(true); }

OpCase dense(elman::ops::DenseMode mode) {
  return {[mode](const Shape& s) {
            auto o = torch::TensorOptions().device(torch::kCUDA);
            std::vector<torch::Tensor> in = {
                leaf(torch::randn({s.B, s.T, s.D}, o.dtype(s.dtype))),
                leaf(torch::randn({s.D, s.D}, o) * (0.9 / std::sqrt(static_cast<double>(s.D)))),
                leaf(torch::randn({s.B, s.D}, o) * 0.1)};
            if (mode == elman::ops::DenseMode::GatedTanh) in.push_back(leaf(torch::randn({s.B, s.T, s.D}, o.dtype(s.dtype))));
            return in;
          },
          [mode](const std::vector<torch::Tensor>& in, const Shape& s) {
            auto apre = in.size() > 3 ? in[3] : torch::Tensor();
            return elman::ops::dense_elman(in[0], in[1], apre, in[2], mode, s.impl);
          }};
}

OpCase diag(elman::ops::DiagCell cell) {
  return {[cell](const Shape& s) {
            auto o = torch::TensorOptions().device(torch::kCUDA);
            const auto P = static_cast<int64_t>(elman::ops::diag_cell_info(cell).params.size());
            return std::vector<torch::Tensor>{leaf(torch::randn({s.B, s.T, 2 * s.D}, o.dtype(s.dtype))),
                                              leaf(torch::randn({P, s.D}, o) * 0.5),
                                              leaf(torch::randn({s.B, s.D}, o) * 0.1)};
          },
          [cell](const std::vector<torch::Tensor>& in, const Shape& s) {
            return elman::ops::gated_diag(cell, in[0], in[1], in[2], s.impl);
          }};
}

// E70-E73: n_state = --D; proj [B,T,P n] with k, q ~ N(0, 1/n) (dots of O(1)), per-row parameters at their init.
OpCase matrix(elman::ops::MatrixCell cell) {
  return {[cell](const Shape& s) {
            auto o = torch::TensorOptions().device(torch::kCUDA);
            const auto& info = elman::ops::matrix_cell_info(cell);
            auto proj = torch::randn({s.B, s.T, info.projections * s.D}, o) / std::sqrt(static_cast<double>(s.D));
            auto w = torch::empty({static_cast<int64_t>(info.params.size()), s.D}, o);
            for (size_t i = 0; i < info.params.size(); ++i) w[i].fill_(info.params[i].second);
            return std::vector<torch::Tensor>{leaf(proj.to(s.dtype)), leaf(w)};
          },
          [cell](const std::vector<torch::Tensor>& in, const Shape& s) {
            return elman::ops::matrix_elman(cell, in[0], in[1], torch::Tensor(), s.D, s.impl);
          }};
}

// E87: blocks, top-K, n_state; proj [B,T, blocks*3n + n + blocks] as the mixer's GEMM gives it.
OpCase sparse(int64_t blocks, int64_t top_k, int64_t n) {
  return {[=](const Shape& s) {
            auto o = torch::TensorOptions().device(torch::kCUDA);
            return std::vector<torch::Tensor>{leaf(torch::randn({s.B, s.T, blocks * 3 * n + n + blocks}, o.dtype(s.dtype))),
                                              leaf(2.0 + 0.5 * torch::randn({blocks, n}, o))};
          },
          [=](const std::vector<torch::Tensor>& in, const Shape& s) {
            return elman::ops::sparse_block(in[0], in[1], torch::Tensor(), blocks, top_k, n, s.impl);
          }};
}

// E63m: N slots of width D; proj [B,T,2D+2N] = [k | q | W_x x | W_alpha x], k and q ~ N(0, 4/D) (tanh's not
// saturated), W_r ~ N(0, 0.25/N), b 0, b_alpha 2 (the init).
OpCase slots(int64_t N) {
  return {[=](const Shape& s) {
            auto o = torch::TensorOptions().device(torch::kCUDA);
            auto kq = torch::randn({s.B, s.T, 2 * s.D}, o) * (2.0 / std::sqrt(static_cast<double>(s.D)));
            return std::vector<torch::Tensor>{leaf(torch::cat({kq, torch::randn({s.B, s.T, 2 * N}, o)}, 2).to(s.dtype)),
                                              leaf(torch::randn({N, N}, o) * (0.5 / std::sqrt(static_cast<double>(N)))),
                                              leaf(torch::zeros({N}, o)), leaf(torch::full({N}, 2.0, o))};
          },
          [=](const std::vector<torch::Tensor>& in, const Shape& s) {
            return elman::ops::slot_matrix(in[0], in[1], in[2], in[3], torch::Tensor(), N, s.impl);
          }};
}

// The gated delta rule (GatedDeltaNet) at the 100M model's heads: H 6, K 128, V 256; q, k L2-normalised (q scaled
// by 1/sqrt(K)), g and beta in the layer's ranges, fp32 as the layer gives them.
OpCase gated_delta() {
  return {[](const Shape& s) {
            constexpr int64_t H = 6, K = 128, V = 256;
            auto o = torch::TensorOptions().device(torch::kCUDA);
            auto l2 = [](const torch::Tensor& x) { return x / x.norm(2, -1, true); };
            return std::vector<torch::Tensor>{
                leaf((l2(torch::randn({s.B, s.T, H, K}, o)) / std::sqrt(static_cast<double>(K))).to(s.dtype)),
                leaf(l2(torch::randn({s.B, s.T, H, K}, o)).to(s.dtype)), leaf(torch::randn({s.B, s.T, H, V}, o).to(s.dtype)),
                leaf(-torch::exp(torch::rand({H}, o) * std::log(16.0)) * torch::softplus(torch::randn({s.B, s.T, H}, o) - 3.0)),
                leaf(torch::sigmoid(torch::randn({s.B, s.T, H}, o)))};
          },
          [](const std::vector<torch::Tensor>& in, const Shape& s) {
            return elman::ops::gated_delta(in[0], in[1], in[2], in[3], in[4], torch::Tensor(), s.impl);
          }};
}

// Mamba2's SSD scan: H = --D heads of headdim 64, d_state 128, no initial state; x, B, C in --dtype (as the
// autocast conv gives them), dt after softplus and A = -exp(A_log) in fp32 at their init ranges.
OpCase ssd() {
  return {[](const Shape& s) {
            auto o = torch::TensorOptions().device(torch::kCUDA);
            const int64_t H = s.D, P = 64, N = 128;
            return std::vector<torch::Tensor>{
                leaf(torch::randn({s.B, s.T, H, P}, o.dtype(s.dtype))),
                leaf(torch::softplus(torch::randn({s.B, s.T, H}, o) - 2.0)),
                leaf(-(torch::rand({H}, o) * 15.0 + 1.0)),
                leaf(torch::randn({s.B, s.T, N}, o.dtype(s.dtype))),
                leaf(torch::randn({s.B, s.T, N}, o.dtype(s.dtype))),
                leaf(torch::ones({H}, o))};
          },
          [](const std::vector<torch::Tensor>& in, const Shape& s) {
            return elman::ops::ssd(in[0], in[1], in[2], in[3], in[4], in[5], torch::Tensor(), s.impl);
          }};
}

// The conv and norm cases read the columns [offset, offset + n) of a [B,T,width] projection in --dtype in place, as
// the layers read their in_proj output: in bf16 its rows are 8-byte aligned but not 16 (the 100M layers' widths,
// 3868 and 4620, are 4 mod 8). The slice itself is the leaf, so the timings leave out narrow's backward.
torch::Tensor projection_slice(const Shape& s, int64_t width, int64_t offset, int64_t n) {
  auto o = torch::TensorOptions().device(torch::kCUDA).dtype(s.dtype);
  return leaf(torch::randn({s.B, s.T, width}, o).narrow(-1, offset, n));
}

// The layers' depthwise causal conv (width 4, with bias) + SiLU over --D channels at column 4 of a projection 28
// columns wider.
OpCase short_conv() {
  return {[](const Shape& s) {
            auto o = torch::TensorOptions().device(torch::kCUDA);
            auto x = projection_slice(s, s.D + 28, 4, s.D);
            auto w = leaf(torch::randn({s.D, 1, 4}, o) * 0.5), bias = leaf(torch::randn({s.D}, o) * 0.5);
            return std::vector<torch::Tensor>{x, w, bias};
          },
          [](const std::vector<torch::Tensor>& in, const Shape& s) {
            return std::vector<torch::Tensor>{elman::ops::short_conv(in[0], in[1], in[2], true, s.impl)};
          },
          2048};
}

// Mamba2's gated norm, rmsnorm(y silu(z)) w over rows of --D: y contiguous (the scan's output), z at column 4 of a
// projection 28 columns wider; n in --dtype (the autocast dtype).
OpCase gated_norm() {
  return {[](const Shape& s) {
            auto o = torch::TensorOptions().device(torch::kCUDA);
            return std::vector<torch::Tensor>{leaf(torch::randn({s.B, s.T, s.D}, o.dtype(s.dtype))),
                                              projection_slice(s, s.D + 28, 4, s.D), leaf(torch::ones({s.D}, o))};
          },
          [](const std::vector<torch::Tensor>& in, const Shape& s) {
            return std::vector<torch::Tensor>{elman::ops::gated_rms_norm(
                in[0], in[1], in[2], elman::ops::GateOrder::GateThenNorm, 1e-5, s.dtype, s.impl)};
          },
          1792};
}

// GatedDeltaNet's output norm at the 100M heads, rmsnorm(o) w silu(gate) per head (H 6, V 256): the gate viewed
// per head inside the 4620-wide projection at column 3072, as the layer reads it.
OpCase gated_norm_gdn() {
  return {[](const Shape& s) {
            auto o = torch::TensorOptions().device(torch::kCUDA);
            return std::vector<torch::Tensor>{leaf(torch::randn({s.B, s.T, 6, 256}, o.dtype(s.dtype))),
                                              projection_slice(s, 4620, 3072, 6 * 256), leaf(torch::ones({256}, o))};
          },
          [](const std::vector<torch::Tensor>& in, const Shape& s) {
            auto gate = in[1].view({s.B, s.T, 6, 256});
            return std::vector<torch::Tensor>{elman::ops::gated_rms_norm(
                in[0], gate, in[2], elman::ops::GateOrder::NormThenGate, 1e-5, s.dtype, s.impl)};
          }};
}

const std::map<std::string, OpCase>& ops() {
  static const std::map<std::string, OpCase> m = {
      {"dense-tanh", dense(elman::ops::DenseMode::Tanh)},
      {"dense-linear", dense(elman::ops::DenseMode::Linear)},
      {"dense-gated", dense(elman::ops::DenseMode::GatedTanh)},
      {"diag-e61", diag(elman::ops::DiagCell::E61)},
      {"diag-e62", diag(elman::ops::DiagCell::E62)},
      {"diag-e64", diag(elman::ops::DiagCell::E64)},
      {"diag-e65", diag(elman::ops::DiagCell::E65)},
      {"diag-e67", diag(elman::ops::DiagCell::E67)},
      {"diag-e68", diag(elman::ops::DiagCell::E68)},
      {"matrix-e70", matrix(elman::ops::MatrixCell::E70)},
      {"matrix-e71", matrix(elman::ops::MatrixCell::E71)},
      {"matrix-e72", matrix(elman::ops::MatrixCell::E72)},
      {"matrix-e73", matrix(elman::ops::MatrixCell::E73)},
      {"sparse-b4k2", sparse(4, 2, 32)},
      {"sparse-b16k4", sparse(16, 4, 16)},
      {"sparse-b32k8", sparse(32, 8, 16)},
      {"slots-n8", slots(8)},
      {"gdn", gated_delta()},
      {"ssd", ssd()},
      {"short_conv", short_conv()},
      {"gated_norm", gated_norm()},
      {"gated_norm_gdn", gated_norm_gdn()},
  };
  return m;
}

// Mean milliseconds of fn over iters runs after one warm-up run.
double time_ms(const std::function<void()>& fn, int iters) {
  fn();
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  const auto stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaEventRecord(a, stream);
  for (int i = 0; i < iters; ++i) fn();
  cudaEventRecord(b, stream);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a), cudaEventDestroy(b);
  return ms / iters;
}

[[noreturn]] void usage(const std::string& why) {
  std::string names;
  for (const auto& [k, v] : ops()) names += (names.empty() ? "" : ", ") + k;
  throw std::invalid_argument(why + "\nusage: elman-opbench OP [--B n] [--T n] [--D n] [--dtype bf16|f32] "
                              "[--impl kernel|reference|chunked] [--iters n]; OP is one of " + names);
}
}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 2) usage("no op given");
    const std::string name = argv[1];
    const auto it = ops().find(name);
    if (it == ops().end()) usage("unknown op '" + name + "'");
    const OpCase& op = it->second;
    Shape s;
    if (op.default_D > 0) s.D = op.default_D;
    int iters = 10;
    for (int i = 2; i < argc; i += 2) {
      const std::string k = argv[i];
      if (i + 1 >= argc) usage(k + " needs a value");
      const std::string v = argv[i + 1];
      if (k == "--B") s.B = std::stoll(v);
      else if (k == "--T") s.T = std::stoll(v);
      else if (k == "--D") s.D = std::stoll(v);
      else if (k == "--iters") iters = std::stoi(v);
      else if (k == "--dtype" && (v == "bf16" || v == "f32")) s.dtype = v == "bf16" ? torch::kBFloat16 : torch::kFloat;
      else if (k == "--impl" && (v == "kernel" || v == "reference" || v == "chunked"))
        s.impl = v == "kernel" ? Impl::Kernel : v == "chunked" ? Impl::Chunked : Impl::Reference;
      else usage("bad option " + k + " " + v);
    }
    if (!torch::cuda::is_available()) throw std::runtime_error("elman-opbench needs a CUDA GPU");
    torch::manual_seed(0);
    auto in = op.inputs(s);
    const double fwd = time_ms([&] {
      torch::NoGradGuard ng;
      op.forward(in, s);
    }, iters);
    const double both = time_ms([&] {
      auto out = op.forward(in, s);
      auto loss = out[0].sum();
      for (size_t i = 1; i < out.size(); ++i) loss = loss + out[i].sum();
      loss.backward();
    }, iters);
    std::printf("%-14s B=%-3lld T=%-5lld D=%-5lld %-5s %-10s fwd %8.3f ms  fwd+bwd %8.3f ms  bwd %8.3f ms\n",
                name.c_str(), static_cast<long long>(s.B), static_cast<long long>(s.T), static_cast<long long>(s.D),
                s.dtype == torch::kBFloat16 ? "bf16" : "f32", elman::ops::impl_name(s.impl), fwd, both, both - fwd);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "elman-opbench: %s\n", e.what());
    return 2;
  }
}
