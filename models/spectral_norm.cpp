#include "models/spectral_norm.h"

namespace elman::models {

torch::Tensor make_spectral_u(torch::nn::Module& m, const std::string& name, int64_t rows, const torch::TensorOptions& o) {
  auto u = torch::randn({rows}, o);
  if (!u.is_meta()) u = u / u.norm();
  return m.register_buffer(name + "_u", u);
}

torch::Tensor spectral_normalize(const torch::Tensor& W, torch::Tensor& u, double rho, bool training) {
  torch::Tensor uu, v;
  {
    torch::NoGradGuard no_grad;
    auto w = W.detach().to(torch::kFloat);
    uu = u.clone();
    // Products as elementwise multiply + sum, which autocast leaves in fp32 (a matmul would run in bf16).
    for (int i = 0; i < 3; ++i) {
      v = (w * uu.unsqueeze(1)).sum(0);
      v = v / (v.norm() + 1e-12);
      uu = (w * v.unsqueeze(0)).sum(1);
      uu = uu / (uu.norm() + 1e-12);
    }
    if (training) u.copy_(uu);
  }
  auto sigma = (W * torch::outer(uu, v)).sum().abs();
  return W * (rho / (sigma + 1e-8));
}

}  // namespace elman::models
