// Thread geometry of the slot-matrix kernels (plain C++: the op's host code checks sizes with it too).
#pragma once
#include <cstdint>

namespace elman::cuda::slots {

constexpr int kThreads = 256;   // the most threads per block (both kernels are compiled for it: 255 registers each)
constexpr int kSmallCols = 5;   // columns per thread of the first variant: D <= 1280 (the 100M widths)

// Columns per thread of the second variant, where the register file holds more than kSmallCols: the state (and in
// the backward its gradient) of N x C fp32 values per thread, N C <= 64 per array, at most 16 columns.
constexpr int big_cols(int N) { return N <= 4 ? 16 : (64 / N > kSmallCols ? 64 / N : kSmallCols); }

// The widest D the kernels take for N slots.
constexpr int64_t max_width(int N) { return static_cast<int64_t>(big_cols(N)) * kThreads; }

}  // namespace elman::cuda::slots
