#include "models/param.h"

#include <cmath>

#include "ops/common/impl.h"

namespace elman::models {

torch::Tensor make_param(torch::nn::Module& m, const std::string& name, torch::IntArrayRef shape, Init init,
                         const torch::TensorOptions& opts, int64_t xavier_blocks, double value) {
  auto t = torch::empty(shape, opts);
  if (!t.is_meta()) {
    torch::NoGradGuard no_grad;
    switch (init) {
      case Init::Xavier: {
        TORCH_CHECK(t.dim() == 2 && t.size(0) % xavier_blocks == 0, "xavier init needs a 2-D weight");
        const int64_t rows = t.size(0) / xavier_blocks;
        const double bound = value * std::sqrt(6.0 / static_cast<double>(rows + t.size(1)));
        t.uniform_(-bound, bound);
        break;
      }
      case Init::Orthogonal: torch::nn::init::orthogonal_(t, value); break;
      case Init::Normal002: t.normal_(0.0, 0.02); break;
      case Init::Ones: t.fill_(1.0); break;
      case Init::Zeros: t.zero_(); break;
      case Init::Constant: t.fill_(value); break;
      case Init::Uniform: t.uniform_(-value, value); break;
    }
  }
  return m.register_parameter(name, t);
}

std::vector<torch::Tensor> split_linear(const torch::Tensor& x, const torch::Tensor& w, std::vector<int64_t> sizes) {
  const int64_t pad = (8 - w.size(0) % 8) % 8;
  if (pad == 0) return torch::linear(x, w).split_with_sizes(sizes, -1);
  const auto dtype = ops::autocast_dtype_or(x);
  sizes.push_back(pad);
  auto pieces = torch::linear(x.to(dtype), torch::constant_pad_nd(w.to(dtype), {0, 0, 0, pad})).split_with_sizes(sizes, -1);
  pieces.pop_back();
  return pieces;
}

}  // namespace elman::models
