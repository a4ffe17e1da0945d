// AdamW with fp32 state: on the GPU our kernel (cuda/adamw, which can also write the weights' bf16 copies for
// the forward, ops/common/weight_copies.h), on the CPU ATen's fused multi-tensor kernel (the same math); plus the
// learning-rate schedule: linear warmup, then cosine decay to 0 over the run's budget.
#pragma once
#include <torch/torch.h>

#include <optional>
#include <vector>

namespace elman::app {

class AdamW {
 public:
  // bf16_copies: every step also writes each CUDA parameter's bf16 copy and registers it (ops::set_weight_copy), so
  // that a bf16-autocast forward multiplies the copies instead of casting the weights; dropped with the optimizer.
  AdamW(std::vector<torch::Tensor> params, double beta1, double beta2, double weight_decay, double eps = 1e-8,
        bool bf16_copies = false);
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;
  // Uses each parameter's .grad(); parameters without a gradient are skipped. `lr` and `skip` are one-element
  // fp32 tensors on the parameters' device, read by the kernel (so a captured step can be replayed with a new
  // learning rate); while `skip` holds 1 the weights and moments stay as they are (the step counters still
  // advance), so a step can be cancelled without the host seeing the value first.
  // `grad_divisor`, when given (a one-element fp32 tensor on the same device), divides every gradient inside the
  // kernel: gradient clipping without a pass of its own (see clip_divisor).
  void step(const torch::Tensor& lr, const torch::Tensor& skip, const std::optional<torch::Tensor>& grad_divisor = std::nullopt);
  void zero_grad();      // drops the gradients

  // State for checkpoints: exp_avg, exp_avg_sq and step for every parameter, in parameter order.
  std::vector<torch::Tensor> state() const;
  void load_state(const std::vector<torch::Tensor>& state);

 private:
  std::vector<torch::Tensor> params_, exp_avg_, exp_avg_sq_, steps_, copies_;
  double beta1_, beta2_, weight_decay_, eps_;
  bool bf16_copies_;
};

// The total L2 norm of all gradients: a 0-dim fp32 tensor on the parameters' device, without host synchronisation.
torch::Tensor grad_norm(const std::vector<torch::Tensor>& params);

// What clips gradients of total norm `norm` to a norm of at most max_norm when they are divided by it:
// max(1, (norm + 1e-6) / max_norm), a one-element fp32 tensor for AdamW::step; nullopt when max_norm <= 0 (no clip).
std::optional<torch::Tensor> clip_divisor(const torch::Tensor& norm, double max_norm);

// Learning rate at `step` given the fraction of the budget used so far (0..1).
double lr_at(double peak, int64_t step, int64_t warmup, double progress);

}  // namespace elman::app
