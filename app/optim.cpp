#include "app/optim.h"

#include <algorithm>
#include <cmath>

namespace elman::app {

AdamW::AdamW(std::vector<torch::Tensor> params, double beta1, double beta2, double weight_decay, double eps)
    : params_(std::move(params)), beta1_(beta1), beta2_(beta2), weight_decay_(weight_decay), eps_(eps) {
  for (const auto& p : params_) {
    TORCH_CHECK(p.scalar_type() == torch::kFloat, "AdamW keeps fp32 master weights; got a ", p.scalar_type(), " parameter");
    exp_avg_.push_back(torch::zeros_like(p));
    exp_avg_sq_.push_back(torch::zeros_like(p));
    steps_.push_back(torch::zeros({}, p.options()));
  }
}

void AdamW::step(const torch::Tensor& lr, const torch::Tensor& skip, const std::optional<torch::Tensor>& grad_divisor) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> p, g, m, v, s;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].grad().defined()) continue;
    p.push_back(params_[i]), g.push_back(params_[i].grad()), m.push_back(exp_avg_[i]);
    v.push_back(exp_avg_sq_[i]), s.push_back(steps_[i]);
  }
  if (p.empty()) return;
  at::_foreach_add_(s, 1);
  at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1_, beta2_, weight_decay_, eps_, /*amsgrad=*/false, /*maximize=*/false,
                    /*grad_scale=*/grad_divisor, /*found_inf=*/skip);
}

void AdamW::zero_grad() {
  for (auto& p : params_) p.mutable_grad() = torch::Tensor();
}

std::vector<torch::Tensor> AdamW::state() const {
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i) out.insert(out.end(), {exp_avg_[i], exp_avg_sq_[i], steps_[i]});
  return out;
}

void AdamW::load_state(const std::vector<torch::Tensor>& state) {
  TORCH_CHECK(state.size() == 3 * params_.size(), "optimizer state does not match the model");
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    exp_avg_[i].copy_(state[3 * i]);
    exp_avg_sq_[i].copy_(state[3 * i + 1]);
    steps_[i].copy_(state[3 * i + 2]);
  }
}

torch::Tensor grad_norm(const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return torch::zeros({});
  return torch::stack(at::_foreach_norm(grads, 2)).to(torch::kFloat).norm();
}

std::optional<torch::Tensor> clip_divisor(const torch::Tensor& norm, double max_norm) {
  if (max_norm <= 0) return std::nullopt;
  torch::NoGradGuard no_grad;
  return torch::clamp_min((norm.to(torch::kFloat) + 1e-6) / max_norm, 1.0).reshape({1});
}

double lr_at(double peak, int64_t step, int64_t warmup, double progress) {
  const double warm = warmup > 0 ? std::min(1.0, static_cast<double>(step + 1) / static_cast<double>(warmup)) : 1.0;
  const double p = std::clamp(progress, 0.0, 1.0);
  return peak * warm * 0.5 * (1.0 + std::cos(M_PI * p));
}

}  // namespace elman::app
