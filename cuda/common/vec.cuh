// Vector access for elementwise kernels: V consecutive elements moved as one load or store (16 bytes for
// 8 bf16 or 4 fp32), converted to and from fp32, and the host check that every pointer allows it.
#pragma once
#include <cstdint>
#include <initializer_list>

namespace elman::cuda {

template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

template <int V, typename T>
__device__ __forceinline__ void load(const T* p, float (&out)[V]) {
  const auto x = *reinterpret_cast<const Vec<T, V>*>(p);
#pragma unroll
  for (int j = 0; j < V; ++j) out[j] = static_cast<float>(x.v[j]);
}

template <int V, typename T>
__device__ __forceinline__ void store(T* p, const float (&in)[V]) {
  Vec<T, V> x;
#pragma unroll
  for (int j = 0; j < V; ++j) x.v[j] = static_cast<T>(in[j]);
  *reinterpret_cast<Vec<T, V>*>(p) = x;
}

// True when every non-null pointer is 16-byte aligned (null pointers: unused optional tensors).
inline bool aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

}  // namespace elman::cuda
