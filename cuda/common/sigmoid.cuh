// The logistic sigmoid on the device, in fp32, for every kernel that needs it.
//   sigmoid:      expf (full precision): fp32 results agree with an fp32 LibTorch reference to ~1e-7.
//   fast_sigmoid: __expf (the ex2.approx unit): a few ulp more error, fewer instructions.
#pragma once

namespace elman::cuda {

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ float fast_sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }

}  // namespace elman::cuda
