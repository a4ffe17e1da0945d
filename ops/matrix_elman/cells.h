// The matrix-state Elman cells (spec 2.14-2.17). Each keeps an n x n state S (rows i, columns j; zero at the
// start unless S0 is given) and reads, per step, P input projections of n each from one GEMM, proj_t =
// [k | v | q (| a)], and a few per-row parameters w[0..Pw) of n each. sigma = sigmoid; every cell outputs
// y = selfgate(S_t q) = u^2 sigma(u) with u = S_t q.
//
//   E70 matrix linear    proj [k|v|q]     w = [decay]:           lambda = clamp(decay, 0, 0.999),
//                                                                S = diag(lambda) S + v k^T
//   E71 matrix S-gated   proj [k|v|q|a]   w = [b_alpha, d_alpha]: r = S k, alpha = sigma(a + d_alpha r + b_alpha),
//                                                                S = diag(alpha) S + diag(1 - alpha) v k^T
//   E72 matrix self-gate proj [k|v|q|a]   w = [b_alpha, d_g, b_g]: alpha = sigma(a + b_alpha), r = S k,
//                                                                g = sigma(d_g r + b_g),
//                                                                S = diag(alpha) S + diag(1 - alpha) (v g) k^T
//   E73 matrix nonlinear proj [k|v|q|z~]  w = [b_z]:             z = tanh(z~ + b_z) (per column j),
//                                                                S_ij = tanh(S_ij z_j + v_i k_j)
// (r = S_{t-1} k everywhere: the gate reads the previous state.) E70's decay is one trained scalar in the model;
// the op takes it per row (the mixer expands the scalar, so its gradient is the sum over rows).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

namespace elman::ops {

enum class MatrixCell { E70, E71, E72, E73 };

struct MatrixCellInfo {
  const char* name;                                     // "e70"
  int64_t projections;                                  // P: proj holds [k | v | q (| a or z~)], n each
  std::vector<std::pair<const char*, double>> params;  // per-row parameter names and init values, in w order
};

inline const MatrixCellInfo& matrix_cell_info(MatrixCell cell) {
  static const std::vector<MatrixCellInfo> info = {
      {"e70", 3, {{"decay", 0.9}}},
      {"e71", 4, {{"b_alpha", 2.0}, {"d_alpha", 0.1}}},
      {"e72", 4, {{"b_alpha", 2.0}, {"d_g", 0.5}, {"b_g", 0.0}}},
      {"e73", 4, {{"b_z", 1.0}}},
  };
  return info[static_cast<size_t>(cell)];
}

// E70's decay is clamped to [0, kE70MaxDecay] (its gradient is zero outside, as autograd's clamp gives it).
constexpr double kE70MaxDecay = 0.999;

}  // namespace elman::ops
