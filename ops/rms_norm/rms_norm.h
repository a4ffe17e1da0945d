#pragma once
#include <torch/torch.h>

#include <vector>

#include "ops/common/impl.h"

namespace elman::ops {

// The residual stream's add + norm of the LM scaffold, in one pass:
//   r = residual + y (rounded to residual's dtype; no add when y is undefined, then r is residual itself)
//   add_rms_norm:   n = r / sqrt(mean(r^2 over the last dim) + eps) * w
//   add_layer_norm: n = (r - mean(r)) / sqrt(mean((r - mean(r))^2) + eps) * w + b   (torch's layer_norm)
// Args: residual [..., C] float32 or bfloat16; y like residual (any float dtype) or undefined; w, b [C] (any
// float dtype, used in fp32); out_dtype: n's dtype (the LM passes the autocast dtype, so the next GEMM reads
// n without a cast). impl: Impl::Kernel (cuda/rms_norm/: one warp per row, fp32 math, one read of residual and
// y, one write of r and n) or Impl::Reference (the *_reference functions).
// Returns {r, n}, differentiable with respect to residual, y, w and b (gradients in each input's dtype).
std::vector<torch::Tensor> add_rms_norm(const torch::Tensor& residual, const torch::Tensor& y, const torch::Tensor& w,
                                        double eps, at::ScalarType out_dtype, Impl impl);
std::vector<torch::Tensor> add_layer_norm(const torch::Tensor& residual, const torch::Tensor& y,
                                          const torch::Tensor& w, const torch::Tensor& b, double eps,
                                          at::ScalarType out_dtype, Impl impl);

// Pure LibTorch, autograd: the same math in fp32, or fp64 for fp64 inputs (the definitions the kernel is tested
// against).
std::vector<torch::Tensor> add_rms_norm_reference(const torch::Tensor& residual, const torch::Tensor& y,
                                                  const torch::Tensor& w, double eps, at::ScalarType out_dtype);
std::vector<torch::Tensor> add_layer_norm_reference(const torch::Tensor& residual, const torch::Tensor& y,
                                                    const torch::Tensor& w, const torch::Tensor& b, double eps,
                                                    at::ScalarType out_dtype);

}  // namespace elman::ops
