// Host launchers of the dense Elman kernels (dense_elman_fwd.cu / dense_elman_bwd.cu have the recurrence,
// layout and numerics). mode: 0 Tanh, 1 Linear, 2 GatedTanh (the values of ops::DenseMode).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace elman::cuda {

// pre [B,T,D] (f32|bf16), W [D,D] (any float dtype, used in fp32), apre [B,T,D] (GatedTanh; else undefined),
// h0 [B,D] (any float dtype) ->
// {h [B,T,D] pre dtype, h_hist [B,T,D] f32, h_T [B,D] f32, c_hist [B,T,D] f32 = tanh(z) (GatedTanh; else undefined)}
std::vector<at::Tensor> dense_elman_fwd(const at::Tensor& pre, const at::Tensor& W, const at::Tensor& apre,
                                        const at::Tensor& h0, int64_t mode);

// Saved tensors from dense_elman_fwd (h: its output h, which the dW product uses), and the incoming gradients
// dh [B,T,D], dh_T [B,D] (either may be undefined = zero; any dtype and strides). dtype: pre's dtype.
// -> {dpre [B,T,D] dtype, dW [D,D] f32, dapre [B,T,D] dtype (GatedTanh; else undefined), dh0 [B,D] f32}
std::vector<at::Tensor> dense_elman_bwd(const at::Tensor& W, const at::Tensor& apre, const at::Tensor& h0,
                                        const at::Tensor& h_hist, const at::Tensor& c_hist, const at::Tensor& h,
                                        const at::Tensor& dh, const at::Tensor& dh_T, int64_t mode,
                                        at::ScalarType dtype);

}  // namespace elman::cuda
