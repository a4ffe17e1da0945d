// Parameter creation with the spec's initialisers. Parameters are made on the device of
// ModelConfig::build; on the meta device (used to count parameters exactly without memory)
// initialisation is skipped.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "ops/common/grad_sink.h"

namespace elman::models {

enum class Init { Xavier, Orthogonal, Normal002, Ones, Zeros, Constant, Uniform };

// Registers and initialises parameter `name` of `shape` on module `m`. Xavier uses fan_out = rows of
// one block of `xavier_blocks` equal row blocks (a fused weight is initialised block by block, as if
// each block were its own Linear), fan_in = columns, and gain `value`. Orthogonal has gain `value`.
// Constant fills with `value`; Uniform draws from U(-value, value).
torch::Tensor make_param(torch::nn::Module& m, const std::string& name, torch::IntArrayRef shape, Init init,
                         const torch::TensorOptions& opts, int64_t xavier_blocks = 1, double value = 1.0);

// torch::linear(x, w), without bias. Under autocast it computes in the autocast dtype as torch::linear does, but
// w's gradient comes out of its GEMM in w's dtype (fp32 master weights: fp32, accumulated in fp32 and never rounded
// to bf16), where autocast's linear writes a bf16 gradient that a cast then widens, one more pass over every weight
// gradient. The bf16 operand is w's copy that the optimizer keeps (ops/common/weight_copies.h) when it is current,
// else a cast of w. Without autocast it is torch::linear.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w);

// linear(x, w) split along the last dim into `sizes` (which add up to w's rows), as views of one split with a
// gradient slot per piece (ops/common/grad_sink.h): the ops that take their piece's slot write its gradient into
// place, and the split's backward copies only the others (no concatenation of the whole). When w's rows are not a multiple of 8, the weight is
// zero-padded to one, so the output's rows are 16-byte aligned: cuBLAS then runs its Hopper
// GEMMs instead of the 2-element-aligned Ampere ones it picks for such widths (2-3x slower at Mamba2's and
// GatedDeltaNet's in_proj widths); the pad columns are a last piece that is dropped.
ops::SlottedSplit split_linear(const torch::Tensor& x, const torch::Tensor& w, std::vector<int64_t> sizes);

}  // namespace elman::models
