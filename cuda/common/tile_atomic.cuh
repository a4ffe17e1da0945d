// Adding a warp's 16 x 16 fp32 wmma accumulator tile into global memory with float4 atomics (sm_90), for
// kernels whose blocks each own one share of a sum (heads, V tiles) and add it in place instead of writing
// per-share partials for a separate reduction. The order of the adds varies from run to run.
#pragma once
#include <mma.h>

#include <cstdint>

namespace elman::cuda {

// p: the tile's first element, row-major with leading dimension ld (a multiple of 4, p 16-byte aligned);
// scratch: 256 floats of shared memory owned by this warp (the fragment's register layout is opaque, so the tile
// goes through it).
__device__ __forceinline__ void atomic_add_tile(
    float* p, int64_t ld, const nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>& c,
    float* scratch) {
  nvcuda::wmma::store_matrix_sync(scratch, c, 16, nvcuda::wmma::mem_row_major);
  __syncwarp();
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int k = lane; k < 64; k += 32) {  // 16 rows x 4 float4
    const int r = k >> 2, q = (k & 3) * 4;
    atomicAdd(reinterpret_cast<float4*>(p + r * ld + q), *reinterpret_cast<const float4*>(scratch + r * 16 + q));
  }
  __syncwarp();  // the scratch is free for the warp's next tile
}

}  // namespace elman::cuda
