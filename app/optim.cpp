#include "app/optim.h"

#include <algorithm>
#include <cmath>

#include "ops/common/weight_copies.h"

#ifdef ELMAN_WITH_CUDA
#include "cuda/adamw/adamw.h"
#endif

namespace elman::app {

AdamW::AdamW(std::vector<torch::Tensor> params, double beta1, double beta2, double weight_decay, double eps,
             bool bf16_copies)
    : params_(std::move(params)), beta1_(beta1), beta2_(beta2), weight_decay_(weight_decay), eps_(eps),
      bf16_copies_(bf16_copies) {
  for (const auto& p : params_) {
    TORCH_CHECK(p.scalar_type() == torch::kFloat, "AdamW keeps fp32 master weights; got a ", p.scalar_type(), " parameter");
    exp_avg_.push_back(torch::zeros_like(p));
    exp_avg_sq_.push_back(torch::zeros_like(p));
    steps_.push_back(torch::zeros({}, p.options()));
    const bool copy = bf16_copies && p.is_cuda() && p.is_contiguous();
    copies_.push_back(copy ? torch::empty_like(p, p.options().dtype(torch::kBFloat16)) : torch::Tensor());
  }
}

AdamW::~AdamW() {
  for (size_t i = 0; i < params_.size(); ++i)
    if (copies_[i].defined()) ops::drop_weight_copy(params_[i]);
}

void AdamW::step(const torch::Tensor& lr, const torch::Tensor& skip, const std::optional<torch::Tensor>& grad_divisor) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> p, g, m, v, s, low;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].grad().defined()) continue;
    p.push_back(params_[i]), g.push_back(params_[i].grad()), m.push_back(exp_avg_[i]);
    v.push_back(exp_avg_sq_[i]), s.push_back(steps_[i]), low.push_back(copies_[i]);
  }
  if (p.empty()) return;
  at::_foreach_add_(s, 1);
#ifdef ELMAN_WITH_CUDA
  if (p[0].is_cuda()) {
    for (auto& t : g) t = t.contiguous();
    cuda::adamw_step(p, g, m, v, s, low, lr, skip, grad_divisor, beta1_, beta2_, weight_decay_, eps_);
    for (size_t i = 0; i < p.size(); ++i) {  // the weights changed in place: a new version, with its copy
      torch::autograd::impl::bump_version(p[i]);
      if (low[i].defined()) ops::set_weight_copy(p[i], low[i]);
    }
    return;
  }
#endif
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
