// Low-precision copies of weights, kept current by whoever updates the weights. Under bf16 autocast every product
// reads its fp32 master weight as bf16; casting each weight in every forward is one more pass over all of them
// (~0.4 ms a step at 100M on the H100). The optimizer's CUDA kernel (app/optim.cpp, cuda/adamw) writes the bf16
// copy in the same pass as the update and registers it here; models::linear then multiplies the copy instead of
// casting the weight.
// A copy is valid only at the version of its weight at registration (the version counter that every in-place
// change of a tensor advances): a weight changed any other way (a checkpoint loaded, a copy_ or fill_) no longer
// matches, and weight_copy returns nothing, so the caller casts as before. A captured CUDA graph reads the copies
// that its replayed optimizer kernel keeps writing.
#pragma once
#include <torch/torch.h>

namespace elman::ops {

// Records `copy` (same size as w, another dtype) as w's copy at w's current version.
void set_weight_copy(const torch::Tensor& w, const torch::Tensor& copy);
// w's copy in `dtype` if one was recorded at w's current version, else an undefined tensor.
torch::Tensor weight_copy(const torch::Tensor& w, at::ScalarType dtype);
// Forgets w's copy.
void drop_weight_copy(const torch::Tensor& w);

}  // namespace elman::ops
