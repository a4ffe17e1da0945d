// Kernel-time profile of training steps (elman-train --profile N): N steps after the first (warm-up) step run
// under LibTorch's Kineto profiler; the GPU activity is summed by kernel name into a table (time per step, share,
// launches per step) that the run logs and writes to RUN_DIR/profile.txt, beside a Chrome trace
// RUN_DIR/profile.json. It says where a step's time goes, e.g. which small ops a fused path has to absorb.
#pragma once
#include <cstdint>
#include <string>

namespace elman {

class StepProfiler {
 public:
  explicit StepProfiler(int64_t steps) : steps_(steps) {}
  // A profile still recording when the run ends (diverged or failed before its N steps) is stopped, so the
  // process does not exit with Kineto running (which crashed at exit), and its table is not written.
  ~StepProfiler();
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;
  // Whether the next step will be recorded; `warm` is false for the process's first step (never recorded).
  bool records(bool warm) const { return warm && steps_ > 0 && recorded_ < steps_; }
  // Call before each step: starts recording when `records(warm)`.
  void before_step(bool warm);
  // Call after each step with its wall time; after the N-th recorded step it stops, writes the files and returns
  // the table (empty otherwise).
  std::string after_step(double step_s, const std::string& run_dir);

 private:
  int64_t steps_, recorded_ = 0;
  double wall_s_ = 0;
  bool on_ = false;
};

}  // namespace elman
