// Gradient slots (ops/common/grad_sink.h): a split whose pieces' consumers write their gradients into place gives
// the same values and gradients as a plain split, whatever mix of consumers (in place, other ops, a piece used
// twice, an unused piece, a second backward pass), copies exactly the gradients that are not in place, and
// refuses a slot passed with another tensor (CPU, fp64).
#include "ops/common/grad_sink.h"
#include "tests/support/op_checks.h"

using namespace elman;
using test::require_error;

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// y = 3 x, whose backward writes dx = 3 dy into x's slot when it can claim it (a consumer as the ops are).
struct TripleInto : public torch::autograd::Function<TripleInto> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x, const ops::GradSlot& slot) {
    slot.check_piece(x, "triple_into");
    ctx->saved_data["slot"] = slot.to_ivalue();
    ctx->saved_data["sizes"] = x.sizes().vec();
    return {x * 3};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto into = ops::GradSlot::from_ivalue(ctx->saved_data["slot"]).claim(ctx->saved_data["sizes"].toIntVector());
    if (!into.defined()) return {grads[0] * 3, torch::Tensor()};
    torch::mul_out(into, grads[0], 3);
    return {into, torch::Tensor()};
  }
};

torch::Tensor triple(const torch::Tensor& x, const ops::GradSlot& slot) { return TripleInto::apply(x, slot)[0]; }

// The loss over pieces of widths {4, 3, 2, 1}, each consumed differently: 0 by two slotted consumers (the second
// finds the slot taken), 1 by a slotted consumer viewed per "head" and by sin (two uses: summed, then copied), 2 by
// square alone (copied), 3 not at all (zeroed).
torch::Tensor loss_of(const std::vector<torch::Tensor>& p, const std::vector<ops::GradSlot>& s) {
  const auto p1 = p[1].view({p[1].size(0), p[1].size(1), 3, 1});
  return (triple(p[0], s[0]) * triple(p[0], s[0])).sum() + triple(p1, s[1]).cos().sum() + p[1].sin().sum() +
         p[2].square().sum();
}
}  // namespace

TEST_CASE("split_with_slots equals a plain split in values and gradients, copying only what is not in place",
          "[grad_sink]") {
  torch::manual_seed(3);
  const auto x = torch::randn({3, 5, 6}, torch::kDouble).requires_grad_(true);
  const auto w = torch::randn({10, 6}, torch::kDouble).requires_grad_(true);
  const std::vector<int64_t> sizes{4, 3, 2, 1};
  const auto s = ops::split_with_slots(torch::linear(x, w), sizes);
  const auto plain = torch::linear(x, w).split_with_sizes(sizes, -1);
  REQUIRE(s.pieces.size() == 4);
  REQUIRE(s.slots.size() == 4);
  const std::vector<ops::GradSlot> none(4);
  for (size_t i = 0; i < 4; ++i) CHECK(torch::equal(s.pieces[i], plain[i]));
  const auto want = torch::autograd::grad({loss_of(plain, none)}, {x, w});
  const auto loss = loss_of(s.pieces, s.slots);
  const int64_t before = ops::slot_copies();
  const auto got = torch::autograd::grad({loss}, {x, w}, {}, /*retain_graph=*/true);
  // Copied: piece 0 (its second consumer's gradient, summed), piece 1 (summed with sin's), piece 2 (square's).
  CHECK(ops::slot_copies() - before == 3);
  CHECK(torch::allclose(got[0], want[0], 1e-12, 1e-12));
  CHECK(torch::allclose(got[1], want[1], 1e-12, 1e-12));
  // A second pass over the same graph claims the slots anew and gives the same gradients.
  const auto again = torch::autograd::grad({loss}, {x, w});
  CHECK(torch::allclose(again[0], want[0], 1e-12, 1e-12));
  CHECK(torch::allclose(again[1], want[1], 1e-12, 1e-12));
}

TEST_CASE("split_with_slots: a piece whose only consumer writes in place is not copied", "[grad_sink]") {
  torch::manual_seed(4);
  const auto y = torch::randn({2, 7, 5}, torch::kDouble).requires_grad_(true);
  const auto s = ops::split_with_slots(y, {2, 3});
  const int64_t before = ops::slot_copies();
  (triple(s.pieces[0], s.slots[0]).square().sum() + triple(s.pieces[1], s.slots[1]).sum()).backward();
  CHECK(ops::slot_copies() == before);
  const auto yd = y.detach();
  CHECK(torch::allclose(y.grad().narrow(2, 0, 2), 18 * yd.narrow(2, 0, 2), 1e-12, 1e-12));
  CHECK(torch::allclose(y.grad().narrow(2, 2, 3), torch::full({2, 7, 3}, 3.0, torch::kDouble), 1e-12, 1e-12));
}

TEST_CASE("a gradient slot passed with another tensor than its piece is refused with one line", "[grad_sink]") {
  const auto y = torch::randn({2, 4, 6}, torch::kDouble);
  const auto s = ops::split_with_slots(y, {3, 3});
  const char* needle = "belongs to another tensor";
  require_error([&] { triple(s.pieces[1], s.slots[0]); }, needle);                    // another piece
  require_error([&] { triple(s.pieces[0].transpose(0, 1), s.slots[0]); }, needle);  // not a view in place
  require_error([&] { triple(s.pieces[0].clone(), s.slots[0]); }, needle);           // a copy
  require_error([&] { ops::split_with_slots(y, {3, 2}); }, "add up to 5");
}
