#include "ops/common/grad_sink.h"

#include <ATen/TensorUtils.h>

#include <atomic>

namespace elman::ops {

torch::Tensor detail::GradSink::buffer() {
  if (!buf.defined()) buf = torch::empty_strided(shape, strides, options);
  return buf;
}

torch::Tensor detail::GradSink::columns(int64_t piece) { return buffer().narrow(-1, offsets[piece], sizes[piece]); }

namespace {
std::atomic<int64_t> g_copies{0};

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

c10::intrusive_ptr<detail::GradSink> sink_of(const c10::IValue& v) {
  return c10::static_intrusive_pointer_cast<detail::GradSink>(v.toCapsule());
}

struct SplitWithSlotsFunction : public torch::autograd::Function<SplitWithSlotsFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& y,
                               const c10::intrusive_ptr<detail::GradSink>& sink) {
    ctx->saved_data["sink"] = c10::IValue::make_capsule(sink);
    ctx->set_materialize_grads(false);  // a piece without a gradient arrives undefined: its columns are zeroed
    return y.split_with_sizes(sink->sizes, -1);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto sink = sink_of(ctx->saved_data["sink"]);
    const auto dy = sink->buffer();
    for (size_t i = 0; i < grads.size(); ++i) {
      auto cols = sink->columns(static_cast<int64_t>(i));
      const auto& g = grads[i];
      if (!g.defined()) {
        cols.zero_();
      } else if (g.data_ptr() != cols.data_ptr() || g.sizes() != cols.sizes() || g.strides() != cols.strides()) {
        cols.copy_(g);
        ++g_copies;
      }  // else: the consumer wrote it in place
    }
    sink->buf = torch::Tensor();  // this pass is done with it; the next one allocates anew
    sink->taken.assign(sink->taken.size(), false);
    return {dy, torch::Tensor()};
  }
};
}  // namespace

GradSlot::GradSlot(c10::intrusive_ptr<detail::GradSink> sink, int64_t piece) : sink_(std::move(sink)), piece_(piece) {}

void GradSlot::check_piece(const torch::Tensor& x, const char* op) const {
  if (!defined()) return;
  const auto& s = *sink_;
  std::vector<int64_t> piece_sizes = s.shape;
  piece_sizes.back() = s.sizes[piece_];
  std::vector<int64_t> piece_strides = s.strides;
  const auto view = at::detail::computeStride(piece_sizes, piece_strides, x.sizes());
  TORCH_CHECK(x.data_ptr() == s.data[piece_] && x.scalar_type() == s.options.dtype() && view.has_value() &&
                  x.strides() == at::IntArrayRef(*view),
              op, ": the gradient slot passed belongs to another tensor than this input (pass the slot of the split "
              "piece that the op reads, viewed in place)");
}

torch::Tensor GradSlot::claim(at::IntArrayRef sizes) const {
  if (!defined() || sink_->taken[piece_]) return {};
  sink_->taken[piece_] = true;
  return sink_->columns(piece_).view(sizes);
}

c10::IValue GradSlot::to_ivalue() const {
  if (!defined()) return c10::IValue();
  return c10::ivalue::Tuple::create({c10::IValue::make_capsule(sink_), c10::IValue(piece_)});
}

GradSlot GradSlot::from_ivalue(const c10::IValue& v) {
  if (v.isNone()) return {};
  const auto& e = v.toTupleRef().elements();
  return GradSlot(sink_of(e[0]), e[1].toInt());
}

SlottedSplit split_with_slots(const torch::Tensor& y, const std::vector<int64_t>& sizes) {
  TORCH_CHECK(y.dim() >= 1 && y.is_non_overlapping_and_dense(), "split_with_slots: y must be dense");
  auto sink = c10::make_intrusive<detail::GradSink>();
  sink->shape = y.sizes().vec(), sink->strides = y.strides().vec(), sink->options = y.options();
  int64_t off = 0;
  for (int64_t n : sizes) sink->offsets.push_back(off), sink->sizes.push_back(n), off += n;
  TORCH_CHECK(off == y.size(-1), "split_with_slots: sizes add up to ", off, ", y's last dim is ", y.size(-1));
  sink->taken.assign(sizes.size(), false);
  SlottedSplit out;
  out.pieces = SplitWithSlotsFunction::apply(y, sink);
  for (size_t i = 0; i < sizes.size(); ++i) {
    sink->data.push_back(out.pieces[i].data_ptr());
    out.slots.emplace_back(sink, static_cast<int64_t>(i));
  }
  return out;
}

int64_t slot_copies() { return g_copies.load(); }

}  // namespace elman::ops
