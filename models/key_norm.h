// The key normalisation of the matrix-state Elman cells (E63m, E70-E73; option --key). Their reference fed the
// raw projection k = W_k u into r = S k and the write v k^T. At 100M that key has |k|^2 of order D * E[u^2]
// (hundreds), which makes the backward recurrence expansive: the gradient grows geometrically in T and E63m,
// E71, E72 diverge (measurements in ops/matrix_elman/README.md). "l2" divides k by its L2 norm first (as E75's
// cell does); "raw" is the reference's cell. The registry's defaults say which one each model uses.
#pragma once
#include <torch/torch.h>

#include "models/model_config.h"

namespace elman::models {

// True for --key l2, false for --key raw; any other value throws a one-line error naming the valid ones.
bool key_is_l2(const ModelConfig& cfg);

// proj [..., C] with its first `width` columns (the key) divided by their L2 norm (+1e-6), computed in fp32 and
// returned in proj's dtype; the other columns pass through. Differentiable (autograd through the norm).
torch::Tensor l2_normalize_key(const torch::Tensor& proj, int64_t width);

}  // namespace elman::models
