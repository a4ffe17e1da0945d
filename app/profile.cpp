#include "app/profile.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <vector>

namespace elman {
namespace {
namespace prof = torch::profiler::impl;
const std::set<prof::ActivityType> kActivities = {prof::ActivityType::CPU, prof::ActivityType::CUDA};
prof::ProfilerConfig config() { return prof::ProfilerConfig(prof::ProfilerState::KINETO); }
}  // namespace

StepProfiler::~StepProfiler() {
  if (!on_) return;
  try {
    torch::autograd::profiler::disableProfiler();
  } catch (...) {  // a destructor must not throw; the profile is being discarded anyway
  }
}

void StepProfiler::before_step(bool warm) {
  if (on_ || !records(warm)) return;
  torch::autograd::profiler::prepareProfiler(config(), kActivities);
  torch::autograd::profiler::enableProfiler(config(), kActivities);
  on_ = true;
}

std::string StepProfiler::after_step(double step_s, const std::string& run_dir) {
  if (!on_) return "";
  wall_s_ += step_s;
  if (++recorded_ < steps_) return "";
  on_ = false;
  auto result = torch::autograd::profiler::disableProfiler();
  struct Sum {
    double ns = 0;
    int64_t calls = 0;
  };
  std::map<std::string, Sum> by_name;
  double total_ns = 0;
  for (const auto& e : result->events()) {
    if (e.deviceType() != c10::DeviceType::CUDA) continue;
    auto& s = by_name[e.name()];
    s.ns += static_cast<double>(e.durationNs()), ++s.calls;
    total_ns += static_cast<double>(e.durationNs());
  }
  std::vector<std::pair<std::string, Sum>> rows(by_name.begin(), by_name.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  const double n = static_cast<double>(steps_);
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "profile of %ld steps: %.2f ms wall per step, %.2f ms of GPU activity per step (%.0f%%)\n",
                static_cast<long>(steps_), wall_s_ / n * 1e3, total_ns / n * 1e-6,
                100.0 * total_ns * 1e-9 / std::max(wall_s_, 1e-12));
  out += line;
  std::snprintf(line, sizeof line, "%10s %6s %8s  %s\n", "ms/step", "share", "calls", "kernel");
  out += line;
  for (size_t i = 0; i < rows.size() && i < 40; ++i) {
    std::snprintf(line, sizeof line, "%10.3f %5.1f%% %8.1f  %.160s\n", rows[i].second.ns / n * 1e-6,
                  100.0 * rows[i].second.ns / std::max(total_ns, 1.0), rows[i].second.calls / n, rows[i].first.c_str());
    out += line;
  }
  std::ofstream(run_dir + "/profile.txt") << out;
  result->save(run_dir + "/profile.json");
  return out;
}

}  // namespace elman
