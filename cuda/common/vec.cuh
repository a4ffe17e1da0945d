// Vector access for elementwise kernels: V consecutive elements moved as one load or store (16 bytes for
// 8 bf16 or 4 fp32), converted to and from fp32 or copied unchanged, and the host side that picks V where the
// width and every pointer allow it.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <type_traits>

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

// V elements moved unchanged (no conversion).
template <int V, typename T>
__device__ __forceinline__ void copy(const T* src, T* dst) {
  *reinterpret_cast<Vec<T, V>*>(dst) = *reinterpret_cast<const Vec<T, V>*>(src);
}

// True when every non-null pointer is 16-byte aligned (null pointers: unused optional tensors).
inline bool aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// Calls f(std::integral_constant<int, V>{}) with V = 16 bytes of T where V divides `width` (the run of contiguous
// elements a thread may take) and every pointer is 16-byte aligned, else with V = 1.
template <typename T, typename F>
void with_vec_width(int64_t width, std::initializer_list<const void*> ptrs, F&& f) {
  constexpr int V = 16 / sizeof(T);
  if (width % V == 0 && aligned16(ptrs)) f(std::integral_constant<int, V>{});
  else f(std::integral_constant<int, 1>{});
}

}  // namespace elman::cuda
