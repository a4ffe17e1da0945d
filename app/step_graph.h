// The training step as a CUDA graph (--cuda-graph): its kernels are captured once and then replayed with one
// launch per step, so a model of many small ops is no longer bound by the host launching them one by one.
// The captured step reads its inputs from (and writes its outputs to) the same device tensors on every replay,
// and must not wait for the host (no .item(), no host copies).
#pragma once
#include <torch/torch.h>

#include <functional>
#include <memory>

namespace elman::app {

class StepGraph {
 public:
  // Makes a side stream current on `dev` (graphs are not captured on the default stream) until destroyed;
  // waits for the work already queued first. Throws std::runtime_error in a build without CUDA.
  explicit StepGraph(const torch::Device& dev);
  ~StepGraph();  // waits for the side stream, then restores the previous stream
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // Captures `step` (which runs nothing while captured), then replays it once. A step that cannot be captured
  // throws std::runtime_error naming --cuda-graph off as the way out.
  void capture(const std::function<void()>& step, const std::string& what);
  void replay();
  bool captured() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace elman::app
