#include "app/step_graph.h"

#include <optional>
#include <stdexcept>

#ifdef ELMAN_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace elman::app {

#ifdef ELMAN_WITH_CUDA
struct StepGraph::Impl {
  explicit Impl(const torch::Device& dev)
      : stream(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, dev.index() < 0 ? c10::cuda::current_device() : dev.index())) {
    c10::cuda::getCurrentCUDAStream(stream.device_index()).synchronize();
    guard.emplace(stream);
  }
  c10::cuda::CUDAStream stream;
  std::optional<c10::cuda::CUDAStreamGuard> guard;
  at::cuda::CUDAGraph graph;
  bool captured = false;
};

StepGraph::StepGraph(const torch::Device& dev) : impl_(std::make_unique<Impl>(dev)) {}

StepGraph::~StepGraph() {
  try {
    impl_->stream.synchronize();
  } catch (...) {  // a failed run's stream: nothing more to wait for
  }
}

void StepGraph::capture(const std::function<void()>& step, const std::string& what) {
  // The eager steps' cached blocks go back first: the graph keeps its own pool for as long as it lives.
  impl_->stream.synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
  try {
    impl_->graph.capture_begin();
    try {
      step();
    } catch (...) {
      try {
        impl_->graph.capture_end();
      } catch (...) {  // the capture is already invalid; the first error is the one to report
      }
      throw;
    }
    impl_->graph.capture_end();
  } catch (const std::exception& e) {
    const auto* c10e = dynamic_cast<const c10::Error*>(&e);
    std::string why = c10e ? c10e->what_without_backtrace() : e.what();
    throw std::runtime_error("the training step of " + what + " cannot be captured as a CUDA graph (" +
                             why.substr(0, why.find('\n')) + "): run it with --cuda-graph off");
  }
  impl_->captured = true;
  impl_->graph.replay();
}

void StepGraph::replay() { impl_->graph.replay(); }
bool StepGraph::captured() const { return impl_->captured; }

#else
struct StepGraph::Impl {};
StepGraph::StepGraph(const torch::Device&) {
  throw std::runtime_error("--cuda-graph needs a build with CUDA (nvcc on PATH at build time)");
}
StepGraph::~StepGraph() = default;
void StepGraph::capture(const std::function<void()>&, const std::string&) {}
void StepGraph::replay() {}
bool StepGraph::captured() const { return false; }
#endif

}  // namespace elman::app
