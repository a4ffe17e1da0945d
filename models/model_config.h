// The architecture part of a run's configuration, as the model registry and the mixers see it.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "ops/common/impl.h"

namespace elman::models {

constexpr int64_t kVocab = 256;  // raw bytes

struct ModelConfig {
  std::string name;        // registry name, e.g. "e61", "llama"
  int64_t dim = 0;         // residual width
  int64_t depth = 0;       // number of blocks
  double expansion = 0;    // d_inner = dim * expansion (cells that use it)
  int64_t heads = 0;       // attention / multi-head cells
  int64_t nstate = 0;      // matrix-state cells
  int64_t blocks = 0;      // sparse block memory (E87): memory blocks
  int64_t topk = 0;        // sparse block memory (E87): blocks updated per step
  int64_t slots = 0;       // slot-matrix cell (E63m): rows of the N x D state
  // E74's cell options (spec 2.18, 2.19): state full | diagonal, update delta | simple,
  // projection tiedkvq | noz | full, nonlinearity tanh | linear. Empty for other models.
  std::string state, update, projection, nonlinearity;
  // The matrix-state Elman cells' key (E63m, E70-E73; models/key_norm.h): l2 | raw. Empty for other models.
  std::string key;
  ops::Impl impl = ops::Impl::Reference;  // recurrent cells: our CUDA kernel or the LibTorch reference
  torch::TensorOptions build = torch::TensorOptions().dtype(torch::kFloat);  // where parameters are made
};

}  // namespace elman::models
