#include "models/lm.h"

#include "models/param.h"

namespace elman::models {

namespace {
constexpr double kNormEps = 1e-5;
torch::Tensor norm(Norm kind, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (kind == Norm::Layer) return torch::layer_norm(x, {x.size(-1)}, w, b, kNormEps);
  return at::rms_norm(x, {x.size(-1)}, w, kNormEps);
}
// Registers `name` (weight, init 1) and, for LayerNorm, `name`_bias (init 0); returns {weight, bias or undefined}.
std::pair<torch::Tensor, torch::Tensor> make_norm(torch::nn::Module& m, const std::string& name, Norm kind,
                                                  const ModelConfig& cfg) {
  auto w = make_param(m, name, {cfg.dim}, Init::Ones, cfg.build);
  auto b = kind == Norm::Layer ? make_param(m, name + "_bias", {cfg.dim}, Init::Zeros, cfg.build) : torch::Tensor();
  return {w, b};
}
}  // namespace

Block::Block(const ModelConfig& cfg, Norm norm_kind, const MixerPtr& mixer, const MixerPtr& mlp) : norm_kind_(norm_kind) {
  std::tie(norm_, norm_bias_) = make_norm(*this, "norm", norm_kind, cfg);
  mixer_ = register_module("mixer", mixer);
  if (mlp) {
    std::tie(mlp_norm_, mlp_norm_bias_) = make_norm(*this, "mlp_norm", norm_kind, cfg);
    mlp_ = register_module("mlp", mlp);
  }
}

torch::Tensor Block::forward(const torch::Tensor& residual) {
  auto r = residual + mixer_->forward(norm(norm_kind_, residual, norm_, norm_bias_));
  return mlp_ ? r + mlp_->forward(norm(norm_kind_, r, mlp_norm_, mlp_norm_bias_)) : r;
}

LMImpl::LMImpl(const ModelConfig& cfg) : cfg_(cfg) {
  const auto& spec = find_model(cfg.name);
  norm_kind_ = spec.norm;
  embedding_ = make_param(*this, "embedding", {kVocab, cfg.dim}, Init::Normal002, cfg.build);
  for (int64_t i = 0; i < cfg.depth; ++i) {
    auto block = std::make_shared<Block>(cfg, norm_kind_, spec.mixer(cfg), spec.mlp ? spec.mlp(cfg) : nullptr);
    blocks_.push_back(register_module("layer" + std::to_string(i), block));
  }
  std::tie(final_norm_, final_norm_bias_) = make_norm(*this, "final_norm", norm_kind_, cfg);
}

torch::Tensor LMImpl::forward(const torch::Tensor& tokens) {
  auto residual = torch::embedding(embedding_, tokens);  // fp32 master weights -> fp32 stream
  for (auto& block : blocks_) residual = block->forward(residual);
  return torch::linear(norm(norm_kind_, residual, final_norm_, final_norm_bias_), embedding_);
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
