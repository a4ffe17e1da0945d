// Random inputs of the gated delta rule in GatedDeltaNet's ranges, shared by its op and preparation tests.
#pragma once
#include <torch/torch.h>

#include <cmath>
#include <cstdint>

namespace elman::test {

struct GatedDeltaInputs {
  torch::Tensor q, k, v, g, beta;
};

// q, k L2-normalised per head (q scaled by 1/sqrt(K)), v ~ N(0, 1) (the three in `dtype`); beta = sigmoid(N(0, 1)),
// g = -A softplus(N(-3, 1)) with A = exp(U(0, log 16)) per head (the layer's -exp(A_log) softplus(a + dt_bias)),
// times `decay_scale` for stronger or weaker decay (both float32). All on `dev`.
inline GatedDeltaInputs gated_delta_inputs(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, torch::Dtype dtype,
                                           torch::Device dev, double decay_scale = 1.0) {
  auto f = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  auto l2 = [](const torch::Tensor& x) { return x / x.norm(2, -1, true); };
  GatedDeltaInputs in;
  in.q = (l2(torch::randn({B, T, H, K}, f)) / std::sqrt(static_cast<double>(K))).to(dtype);
  in.k = l2(torch::randn({B, T, H, K}, f)).to(dtype);
  in.v = torch::randn({B, T, H, V}, f).to(dtype);
  const auto gate = torch::softplus(torch::randn({B, T, H}, f) - 3.0);
  const auto A = torch::exp(torch::rand({H}, f) * std::log(16.0));
  in.g = -decay_scale * A * gate;
  in.beta = torch::sigmoid(torch::randn({B, T, H}, f));
  return in;
}

}  // namespace elman::test
