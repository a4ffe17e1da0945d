#include "models/lm.h"

#include "models/param.h"
#include "ops/rms_norm/rms_norm.h"

namespace elman::models {

namespace {
constexpr double kNormEps = 1e-5;
// Registers `name` (weight, init 1) and, for LayerNorm, `name`_bias (init 0); returns {weight, bias or undefined}.
std::pair<torch::Tensor, torch::Tensor> make_norm(torch::nn::Module& m, const std::string& name, Norm kind,
                                                  const ModelConfig& cfg) {
  auto w = make_param(m, name, {cfg.dim}, Init::Ones, cfg.build);
  auto b = kind == Norm::Layer ? make_param(m, name + "_bias", {cfg.dim}, Init::Zeros, cfg.build) : torch::Tensor();
  return {w, b};
}
}  // namespace

Block::Block(const ModelConfig& cfg, Norm norm_kind, const MixerPtr& mixer_in, const MixerPtr& mlp_in) {
  std::tie(norm, norm_bias) = make_norm(*this, "norm", norm_kind, cfg);
  mixer = register_module("mixer", mixer_in);
  if (mlp_in) {
    std::tie(mlp_norm, mlp_norm_bias) = make_norm(*this, "mlp_norm", norm_kind, cfg);
    mlp = register_module("mlp", mlp_in);
  }
}

LMImpl::LMImpl(const ModelConfig& cfg) : cfg_(cfg) {
  const auto& spec = find_model(cfg.name);
  norm_kind_ = spec.norm;
  norm_impl_ = ops::fused_impl(cfg.impl);
  embedding_ = make_param(*this, "embedding", {kVocab, cfg.dim}, Init::Normal002, cfg.build);
  for (int64_t i = 0; i < cfg.depth; ++i) {
    auto block = std::make_shared<Block>(cfg, norm_kind_, spec.mixer(cfg), spec.mlp ? spec.mlp(cfg) : nullptr);
    blocks_.push_back(register_module("layer" + std::to_string(i), block));
  }
  std::tie(final_norm_, final_norm_bias_) = make_norm(*this, "final_norm", norm_kind_, cfg);
}

torch::Tensor LMImpl::forward(const torch::Tensor& tokens) {
  auto h = torch::embedding(embedding_, tokens);  // the residual stream: fp32 master weights -> fp32
  torch::Tensor y;                                // the last branch's output, not yet added to the stream
  const auto out_dtype = ops::autocast_dtype_or(h);  // the branches read the normed stream in the autocast dtype
  // h += y, and the normed stream that the next branch (or the head) reads.
  auto add_norm = [&](const torch::Tensor& w, const torch::Tensor& b) {
    auto out = norm_kind_ == Norm::Layer ? ops::add_layer_norm(h, y, w, b, kNormEps, out_dtype, norm_impl_)
                                         : ops::add_rms_norm(h, y, w, kNormEps, out_dtype, norm_impl_);
    h = out[0];
    return out[1];
  };
  for (auto& block : blocks_) {
    y = block->mixer->forward(add_norm(block->norm, block->norm_bias));
    if (block->mlp) y = block->mlp->forward(add_norm(block->mlp_norm, block->mlp_norm_bias));
  }
  return models::linear(add_norm(final_norm_, final_norm_bias_), embedding_);
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
