// One AdamW step over lists of fp32 CUDA tensors (decoupled weight decay, the math of ATen's _fused_adamw_, which
// app/optim.cpp keeps for the CPU and which the GPU test compares against), that also writes each parameter's bf16
// copy for the forward's products (ops/common/weight_copies.h) in the same pass.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace elman::cuda {

// params, grads, exp_avgs, exp_avg_sqs: fp32, contiguous, one size per index; steps: one-element fp32 step counts
// (already advanced for this step). low: empty, or one bf16 tensor per parameter (or undefined: none written), set
// to the updated parameter rounded to bf16. lr, skip: one-element fp32; while skip holds 1 nothing is written.
// grad_divisor: divides every gradient (clipping), not written back.
void adamw_step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                const std::vector<at::Tensor>& exp_avgs, const std::vector<at::Tensor>& exp_avg_sqs,
                const std::vector<at::Tensor>& steps, const std::vector<at::Tensor>& low, const at::Tensor& lr,
                const at::Tensor& skip, const std::optional<at::Tensor>& grad_divisor, double beta1, double beta2,
                double weight_decay, double eps);

}  // namespace elman::cuda
