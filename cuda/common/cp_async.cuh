// cp.async (sm_80+): copies from global to shared memory that hold no registers while in flight. A thread
// issues copies, closes them into a group with cp_async_commit(), and cp_async_wait<n>() waits until at most n
// of its groups are still pending; a barrier after the wait makes every thread's copies visible to the block.
#pragma once
#include <cuda_runtime.h>

namespace elman::cuda {

// 16 bytes (both addresses 16-byte aligned, cached in L2 only) or 4 bytes (4-byte aligned).
__device__ __forceinline__ void cp_async(void* smem, const void* gmem, bool vec16) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  if (vec16) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
  else asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int n>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(n) : "memory");
}

}  // namespace elman::cuda
