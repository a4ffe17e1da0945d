#include "models/mixers/slot_matrix.h"

#include "models/key_norm.h"
#include "models/param.h"
#include "ops/slot_matrix/slot_matrix.h"

namespace elman::models {

SlotMatrixMixer::SlotMatrixMixer(const ModelConfig& cfg) : impl_(cfg.impl), slots_(cfg.slots), key_l2_(key_is_l2(cfg)) {
  TORCH_CHECK(slots_ >= 1 && slots_ <= ops::kSlotMatrixMaxSlots, cfg.name, ": ", slots_,
              " slots are not supported; use --slots from 1 to ", ops::kSlotMatrixMaxSlots);
  const int64_t D = static_cast<int64_t>(cfg.dim * cfg.expansion), N = slots_;
  TORCH_CHECK(D >= 1, cfg.name, ": dim * expansion must be at least 1");
  if (impl_ == ops::Impl::Kernel)
    TORCH_CHECK(D <= ops::slot_matrix_kernel_max_width(N), cfg.name, ": D = dim * expansion = ", D,
                " is too wide for the CUDA kernel with ", N, " slots (at most ", ops::slot_matrix_kernel_max_width(N),
                "); use a smaller --dim or --expansion, fewer --slots, or --impl reference");
  const auto& o = cfg.build;
  in_proj_ = make_param(*this, "in_proj", {D, cfg.dim}, Init::Xavier, o);
  w_kq_ = make_param(*this, "w_kq", {2 * D, D}, Init::Xavier, o, /*xavier_blocks=*/2);  // [W_k; W_q]
  w_xa_ = make_param(*this, "w_xa", {2 * N, D}, Init::Xavier, o, /*xavier_blocks=*/2);  // [W_x; W_alpha]
  w_r_ = make_param(*this, "w_r", {N, N}, Init::Orthogonal, o, 1, 0.5);
  b_ = make_param(*this, "b", {N}, Init::Zeros, o);
  b_alpha_ = make_param(*this, "b_alpha", {N}, Init::Constant, o, 1, 2.0);
  out_proj_ = make_param(*this, "out_proj", {cfg.dim, N}, Init::Xavier, o);
}

torch::Tensor SlotMatrixMixer::forward(const torch::Tensor& x) {
  auto u = torch::silu(torch::linear(x, in_proj_));
  auto proj = torch::linear(u, torch::cat({w_kq_, w_xa_}, 0));  // [k | q | W_x u | W_alpha u]
  if (key_l2_) proj = l2_normalize_key(proj, w_kq_.size(0) / 2);
  auto y = ops::slot_matrix(proj, w_r_, b_, b_alpha_, torch::Tensor(), slots_, impl_)[0];
  return torch::linear(y, out_proj_);
}

}  // namespace elman::models
