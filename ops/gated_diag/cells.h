// The gated-diagonal Elman cells (spec sections 2.5, 2.6, 2.9, 2.10, 2.12, 2.13). Each mixes the previous
// state h' = h_{t-1} elementwise (no matrix), from two input projections a = W_1 x and p = W_2 x and a few
// per-channel parameters w[0..P). sigma = sigmoid. Every cell outputs y = selfgate(h) = h^2 sigma(h).
//
//   E61 decay-gated   w = [b_alpha, b_v]:          alpha = sigma(a + b_alpha), v = p + b_v,
//                                                  h = alpha h' + (1 - alpha) v
//   E62 select-write  w = [b_k, b_v]:              k = sigma(a + b_k), v = tanh(p + b_v), h = (1 - k) h' + k v
//   E64 additive-h    w = [b_alpha, b]:            alpha = sigma(a + b_alpha), v = tanh(h' + p + b), h = alpha h' + (1 - alpha) v
//   E65 diagonal-h    w = [b_alpha, b, d_h]:       as E64 with v = tanh(d_h h' + p + b)
//   E67 h-gated       w = [b_alpha, b_v, d_alpha]: alpha = sigma(a + d_alpha h' + b_alpha), v = tanh(p + b_v), h = alpha h' + (1 - alpha) v
//   E68 self-gating   w = [b_alpha, b_v, d_g, b_g]: alpha = sigma(a + b_alpha), g = sigma(d_g h' + b_g),
//                                                  v = tanh(p + b_v) g, h = alpha h' + (1 - alpha) v
//
// The E74 diagonal delta-rule cells (spec 2.19) read a = k, p = v (k NOT normalised) and have no
// per-channel parameters; f = tanh or the identity:
//   E74 delta  w = []:  h = f(h' (1 - k^2) + v k)
//   E74 simple w = []:  h = f(0.9 h' + v k)          (fixed decay 0.9, as in the reference)
// The delta update without tanh is not offered: with k unnormalised, |1 - k^2| > 1 whenever |k| > sqrt 2,
// so the linear state grows without bound (the reference's '-l' runs went NaN).
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace elman::ops {

enum class DiagCell { E61, E62, E64, E65, E67, E68, E74DeltaTanh, E74SimpleTanh, E74SimpleLinear };

struct DiagCellInfo {
  const char* name;                                     // "e61"
  std::vector<std::pair<const char*, double>> params;  // per-channel parameter names and init values, in w order
};

inline const DiagCellInfo& diag_cell_info(DiagCell cell) {
  static const std::vector<DiagCellInfo> info = {
      {"e61", {{"b_alpha", 2.0}, {"b_v", 0.0}}},
      {"e62", {{"b_k", -2.0}, {"b_v", 0.0}}},
      {"e64", {{"b_alpha", 2.0}, {"b", 0.0}}},
      {"e65", {{"b_alpha", 2.0}, {"b", 0.0}, {"d_h", 0.5}}},
      {"e67", {{"b_alpha", 2.0}, {"b_v", 0.0}, {"d_alpha", 0.1}}},
      {"e68", {{"b_alpha", 2.0}, {"b_v", 0.0}, {"d_g", 0.5}, {"b_g", 0.0}}},
      {"e74-diag-delta-tanh", {}},
      {"e74-diag-simple-tanh", {}},
      {"e74-diag-simple-linear", {}},
  };
  return info[static_cast<size_t>(cell)];
}

}  // namespace elman::ops
