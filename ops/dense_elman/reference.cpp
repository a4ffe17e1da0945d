#include "ops/dense_elman/reference.h"

namespace elman::ops {

void check_dense_elman_args(const torch::Tensor& pre, const torch::Tensor& W, const torch::Tensor& apre,
                            const torch::Tensor& h0, DenseMode mode) {
  TORCH_CHECK(pre.defined() && pre.dim() == 3, "dense_elman: pre must be [B,T,D]");
  const int64_t B = pre.size(0), T = pre.size(1), D = pre.size(2);
  TORCH_CHECK(B >= 1 && T >= 1 && D >= 1, "dense_elman: empty input, pre is ", pre.sizes());
  TORCH_CHECK(pre.is_floating_point(), "dense_elman: pre must be floating point, got ", pre.scalar_type());
  TORCH_CHECK(W.defined() && W.dim() == 2 && W.size(0) == D && W.size(1) == D, "dense_elman: W must be [D,D] = [",
              D, ",", D, "], got ", W.defined() ? W.sizes() : at::IntArrayRef{});
  TORCH_CHECK(W.is_floating_point(), "dense_elman: W must be floating point, got ", W.scalar_type());
  if (mode == DenseMode::GatedTanh) {
    TORCH_CHECK(apre.defined(), "dense_elman: GatedTanh needs apre [B,T,D] (the gate pre-activations)");
    TORCH_CHECK(apre.sizes() == pre.sizes(), "dense_elman: apre must be [B,T,D] like pre ", pre.sizes(), ", got ",
                apre.sizes());
    TORCH_CHECK(apre.is_floating_point(), "dense_elman: apre must be floating point, got ", apre.scalar_type());
  } else {
    TORCH_CHECK(!apre.defined(), "dense_elman: apre is used by GatedTanh only; pass an undefined tensor for mode ",
                dense_mode_name(mode));
  }
  if (h0.defined())
    TORCH_CHECK(h0.dim() == 2 && h0.size(0) == B && h0.size(1) == D, "dense_elman: h0 must be [B,D] = [", B, ",", D,
                "], got ", h0.sizes());
}

std::vector<torch::Tensor> dense_elman_reference(const torch::Tensor& pre, const torch::Tensor& W,
                                                 const torch::Tensor& apre, const torch::Tensor& h0, DenseMode mode) {
  check_dense_elman_args(pre, W, apre, h0, mode);
  const int64_t B = pre.size(0), T = pre.size(1), D = pre.size(2);
  const auto ct = pre.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;  // fp32, or fp64 for checks
  auto p = pre.to(ct);
  auto Wt = W.to(ct).t();  // h [B,D_in] @ W^T [D_in,D_out] = (W h) per row
  torch::Tensor alpha;
  if (mode == DenseMode::GatedTanh) alpha = torch::sigmoid(apre.to(ct));
  auto h = h0.defined() ? h0.to(ct) : torch::zeros({B, D}, pre.options().dtype(ct));
  std::vector<torch::Tensor> hs;
  hs.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    auto z = p.select(1, t) + torch::mm(h, Wt);
    switch (mode) {
      case DenseMode::Tanh: h = torch::tanh(z); break;
      case DenseMode::Linear: h = z; break;
      case DenseMode::GatedTanh: {
        auto a = alpha.select(1, t);
        h = a * h + (1 - a) * torch::tanh(z);
        break;
      }
    }
    hs.push_back(h);
  }
  return {torch::stack(hs, 1).to(pre.scalar_type()), h};
}

}  // namespace elman::ops
