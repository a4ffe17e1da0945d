#include "models/key_norm.h"

namespace elman::models {

bool key_is_l2(const ModelConfig& cfg) {
  TORCH_CHECK(cfg.key == "l2" || cfg.key == "raw", cfg.name, ": invalid --key '", cfg.key, "' (valid: l2, raw)");
  return cfg.key == "l2";
}

torch::Tensor l2_normalize_key(const torch::Tensor& proj, int64_t width) {
  const int64_t C = proj.size(-1);
  TORCH_CHECK(width >= 1 && width <= C, "l2_normalize_key: key width ", width, " outside the projection's ", C, " columns");
  auto k = proj.narrow(-1, 0, width).to(torch::kFloat);
  k = (k / (torch::linalg_vector_norm(k, 2, {-1}, /*keepdim=*/true) + 1e-6)).to(proj.scalar_type());
  return width == C ? k : torch::cat({k, proj.narrow(-1, width, C - width)}, -1);
}

}  // namespace elman::models
