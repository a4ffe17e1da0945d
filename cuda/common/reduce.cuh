// Warp-level reductions shared by the kernels.
#pragma once

namespace elman::cuda {

// The sum of x over each group of `width` consecutive lanes (a power of two up to 32), returned to every lane of
// the group (xor butterfly, halving the distance: the same order on every lane). All 32 lanes take part.
template <int width, typename T>
__device__ __forceinline__ T group_sum(T x) {
#pragma unroll
  for (int off = width / 2; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// The sum of x over the 32 lanes of a full warp, returned to every lane.
template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
  return group_sum<32>(x);
}

// The sum of x over the block (one float per thread, a fixed order: deterministic), returned to every thread. red:
// one float of shared memory per warp, free before the call; contains two __syncthreads(), so every thread of the
// block must call it.
__device__ __forceinline__ float block_sum(float x, float* red) {
  x = warp_sum(x);
  const int warps = (blockDim.x + 31) >> 5;
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
  __syncthreads();
  float s = 0.f;
  for (int w = 0; w < warps; ++w) s += red[w];
  __syncthreads();
  return s;
}

}  // namespace elman::cuda
