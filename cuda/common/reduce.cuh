// Warp-level reductions shared by the kernels (rms_norm, gated_norm, the gated delta state pass).
#pragma once

namespace elman::cuda {

// The sum of v over the 32 lanes of a full warp, returned to every lane (butterfly: the same order on every lane).
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace elman::cuda
