// A mixer maps the normed residual stream [B,T,dim] to an update [B,T,dim]. Every model (recurrent
// cell, attention, MLP) is one of these, built by the registry.
#pragma once
#include <torch/torch.h>

#include <memory>

#include "models/model_config.h"

namespace elman::models {

class Mixer : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
};

using MixerPtr = std::shared_ptr<Mixer>;

}  // namespace elman::models
