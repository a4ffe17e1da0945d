// Checkpoints: model parameters, optimizer state, progress counters, the loss history and the RNG
// states, written atomically (temporary file, then rename) to <run_dir>/checkpoint.pt.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "app/optim.h"

namespace elman::app {

struct Progress {
  int64_t step = 0;           // optimizer steps done
  int64_t tokens = 0;         // training tokens consumed
  double train_s = 0;         // time spent in training steps
  double timed_s = 0;         // train_s without the first (warm-up) step
  int64_t timed_tokens = 0;   // tokens without the first step
  std::vector<float> losses;  // per-step training loss
};

// `params` are the model's tensors to keep: its parameters, then its buffers (e.g. spectral-norm vectors).
void save_checkpoint(const std::string& path, const std::vector<torch::Tensor>& params, const AdamW& opt,
                     const Progress& progress);
// Restores the model tensors and the optimizer in place; throws std::runtime_error if the checkpoint
// does not match the model.
Progress load_checkpoint(const std::string& path, const std::vector<torch::Tensor>& params, AdamW& opt);

}  // namespace elman::app
