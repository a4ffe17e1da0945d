// Parameter creation with the spec's initialisers. Parameters are made on the device of
// ModelConfig::build; on the meta device (used to count parameters exactly without memory)
// initialisation is skipped.
#pragma once
#include <torch/torch.h>

#include <string>

namespace elman::models {

enum class Init { Xavier, Orthogonal, Normal002, Ones, Zeros, Constant, Uniform };

// Registers and initialises parameter `name` of `shape` on module `m`. Xavier uses fan_out = rows of
// one block of `xavier_blocks` equal row blocks (a fused weight is initialised block by block, as if
// each block were its own Linear), fan_in = columns, and gain `value`. Orthogonal has gain `value`.
// Constant fills with `value`; Uniform draws from U(-value, value).
torch::Tensor make_param(torch::nn::Module& m, const std::string& name, torch::IntArrayRef shape, Init init,
                         const torch::TensorOptions& opts, int64_t xavier_blocks = 1, double value = 1.0);

}  // namespace elman::models
