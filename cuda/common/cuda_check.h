// Shared host-side checks for our CUDA launchers.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

// One statement (safe under an unbraced if: as two, `if (c) ELMAN_CHECK_CUDA_TENSOR(t);` checked contiguity always).
#define ELMAN_CHECK_CUDA_TENSOR(x)                                 \
  do {                                                              \
    TORCH_CHECK((x).is_cuda(), #x " must be a CUDA tensor");        \
    TORCH_CHECK((x).is_contiguous(), #x " must be contiguous");     \
  } while (0)

#define ELMAN_CHECK_FLOAT_DTYPE(x)                                                               \
  TORCH_CHECK((x).scalar_type() == at::kFloat || (x).scalar_type() == at::kBFloat16, #x " must " \
              "be float32 or bfloat16, got ", (x).scalar_type())

// Dispatch over the two dtypes our kernels instantiate (scalar_t = float or c10::BFloat16).
#define ELMAN_DISPATCH_FLOAT_BF16(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, name, __VA_ARGS__)

namespace elman::cuda {
inline int blocks_for(int64_t n, int threads) { return static_cast<int>((n + threads - 1) / threads); }
}  // namespace elman::cuda
