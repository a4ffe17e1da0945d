// Gradient slots: a split whose backward takes the whole gradient at once (an input projection's two GEMMs) gets it
// without a concatenation when the ops that consume its pieces write their input gradients straight into the
// columns of one buffer.
//
//   auto s = ops::split_with_slots(y, {a, b, c});   // s.pieces: views of y; s.slots: one GradSlot per piece
//   ops::short_conv_split(s.pieces[0], ..., s.slots[0]);   // its backward writes dx into piece 0's columns
//
// The split's backward assembles y's gradient in that buffer: a piece whose gradient is already in its columns is
// left there; any other gradient (from an op that took no slot, or summed over several uses of the piece) is
// copied in; a piece without a gradient is zeroed. The result is the same either way: the slots only save the
// copies. A slot belongs to its piece (a consumer checks that its input is that piece) and is handed out once per
// backward pass (a second consumer of the piece gets none and allocates its own gradient).
#pragma once
#include <torch/torch.h>

#include <vector>

namespace elman::ops {

namespace detail {
// What a split's pieces and their consumers share: the gradient buffer (y's shape, dtype and strides), allocated
// by the first claim or by the split's backward and released by the latter.
struct GradSink : torch::CustomClassHolder {
  std::vector<int64_t> shape, strides, offsets, sizes;  // y's; the pieces' columns
  torch::TensorOptions options;
  std::vector<const void*> data;  // the pieces' data in the forward
  std::vector<bool> taken;        // claimed in this backward pass
  torch::Tensor buf;
  torch::Tensor buffer();                // buf, allocated here if need be
  torch::Tensor columns(int64_t piece);  // piece's columns of buffer()
};
}  // namespace detail

class GradSlot {
 public:
  GradSlot() = default;  // no slot: the consumer allocates its gradient
  GradSlot(c10::intrusive_ptr<detail::GradSink> sink, int64_t piece);
  bool defined() const { return sink_.defined(); }

  // For a consumer's forward: throws a one-line error unless x is this slot's piece (its data, viewed in any
  // shape); a no-op for an undefined slot.
  void check_piece(const torch::Tensor& x, const char* op) const;
  // For a consumer's backward: the piece's columns of the gradient buffer viewed as `sizes` (the consumer's input
  // shape), to write the input gradient into; undefined when there is no slot or it was taken in this pass.
  torch::Tensor claim(at::IntArrayRef sizes) const;

  // Kept in an autograd context's saved_data between forward and backward.
  c10::IValue to_ivalue() const;
  static GradSlot from_ivalue(const c10::IValue& v);

 private:
  c10::intrusive_ptr<detail::GradSink> sink_;
  int64_t piece_ = -1;
};

struct SlottedSplit {
  std::vector<torch::Tensor> pieces;  // views of y, as y.split_with_sizes(sizes, -1)
  std::vector<GradSlot> slots;        // one per piece
};

// y split along its last dim into `sizes` (adding up to y.size(-1)), differentiable, with a gradient slot per
// piece.
SlottedSplit split_with_slots(const torch::Tensor& y, const std::vector<int64_t>& sizes);

// How many piece gradients split_with_slots' backward has copied into place since the process started (0 copies on
// a layer whose consumers all wrote into their slots): for tests.
int64_t slot_copies();

}  // namespace elman::ops
