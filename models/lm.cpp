#include "models/lm.h"

#include "models/param.h"
#include "models/registry.h"

namespace elman::models {

namespace {
constexpr double kNormEps = 1e-5;
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w) {
  return at::rms_norm(x, {x.size(-1)}, w, kNormEps);
}
}  // namespace

Block::Block(const ModelConfig& cfg, const MixerPtr& mixer, const MixerPtr& mlp) {
  norm_ = make_param(*this, "norm", {cfg.dim}, Init::Ones, cfg.build);
  mixer_ = register_module("mixer", mixer);
  if (mlp) {
    mlp_norm_ = make_param(*this, "mlp_norm", {cfg.dim}, Init::Ones, cfg.build);
    mlp_ = register_module("mlp", mlp);
  }
}

torch::Tensor Block::forward(const torch::Tensor& residual) {
  auto r = residual + mixer_->forward(rms_norm(residual, norm_));
  return mlp_ ? r + mlp_->forward(rms_norm(r, mlp_norm_)) : r;
}

LMImpl::LMImpl(const ModelConfig& cfg) : cfg_(cfg) {
  const auto& spec = find_model(cfg.name);
  embedding_ = make_param(*this, "embedding", {kVocab, cfg.dim}, Init::Normal002, cfg.build);
  for (int64_t i = 0; i < cfg.depth; ++i) {
    auto block = std::make_shared<Block>(cfg, spec.mixer(cfg), spec.mlp ? spec.mlp(cfg) : nullptr);
    blocks_.push_back(register_module("layer" + std::to_string(i), block));
  }
  final_norm_ = make_param(*this, "final_norm", {cfg.dim}, Init::Ones, cfg.build);
}

torch::Tensor LMImpl::forward(const torch::Tensor& tokens) {
  auto residual = torch::embedding(embedding_, tokens);  // fp32 master weights -> fp32 stream
  for (auto& block : blocks_) residual = block->forward(residual);
  return torch::linear(rms_norm(residual, final_norm_), embedding_);
}

torch::Tensor LMImpl::loss(const torch::Tensor& inputs, const torch::Tensor& targets) {
  auto logits = forward(inputs);
  return torch::nn::functional::cross_entropy(logits.reshape({-1, kVocab}).to(torch::kFloat), targets.reshape({-1}));
}

int64_t LMImpl::num_params() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

}  // namespace elman::models
