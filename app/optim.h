// AdamW with fp32 state through ATen's fused multi-tensor kernel (CUDA and CPU), plus the
// learning-rate schedule: linear warmup, then cosine decay to 0 over the run's budget.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace elman::app {

class AdamW {
 public:
  AdamW(std::vector<torch::Tensor> params, double beta1, double beta2, double weight_decay, double eps = 1e-8);
  // Uses each parameter's .grad(); parameters without a gradient are skipped. `lr` and `skip` are one-element
  // fp32 tensors on the parameters' device, read by the kernel (so a captured step can be replayed with a new
  // learning rate); while `skip` holds 1 the weights and moments stay as they are (the step counters still
  // advance), so a step can be cancelled without the host seeing the value first.
  void step(const torch::Tensor& lr, const torch::Tensor& skip);
  void zero_grad();      // drops the gradients

  // State for checkpoints: exp_avg, exp_avg_sq and step for every parameter, in parameter order.
  std::vector<torch::Tensor> state() const;
  void load_state(const std::vector<torch::Tensor>& state);

 private:
  std::vector<torch::Tensor> params_, exp_avg_, exp_avg_sq_, steps_;
  double beta1_, beta2_, weight_decay_, eps_;
};

// Returns the clip coefficient's input: the total L2 norm of all gradients (a 0-dim fp32 tensor on the
// parameters' device), and scales the gradients in place so their norm is at most max_norm (if > 0).
// No host synchronisation.
torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

// Learning rate at `step` given the fraction of the budget used so far (0..1).
double lr_at(double peak, int64_t step, int64_t warmup, double progress);

}  // namespace elman::app
