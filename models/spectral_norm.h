// Spectral normalisation (spec section 2.1): W_hat = W * rho / (sigma + 1e-8), where sigma = |u^T W v|
// after 3 power-iteration steps from the persisted vector u (a module buffer, so checkpoints keep it),
// run without gradient; the gradient flows through sigma with u and v held constant.
#pragma once
#include <torch/torch.h>

namespace elman::models {

// Registers the power-iteration vector "<name>_u" (length W.size(0), unit norm) on `m`.
torch::Tensor make_spectral_u(torch::nn::Module& m, const std::string& name, int64_t rows, const torch::TensorOptions& o);

// The normalised weight. In training mode u is updated in place.
torch::Tensor spectral_normalize(const torch::Tensor& W, torch::Tensor& u, double rho, bool training);

}  // namespace elman::models
