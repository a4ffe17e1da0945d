// What a run reports: results.json in its run directory, and one row appended to the results table
// (results.md and results.csv) in the output root.
#pragma once
#include <cstdint>
#include <string>

namespace elman::app {

struct Result {
  std::string model, config;  // registry name; "dim 640 depth 20 expansion 2"
  int64_t params = 0, steps = 0, tokens = 0;
  double wall_s = 0;           // training time (steps only; eval and checkpoints excluded)
  double tok_s = 0;            // tokens per second, first step excluded
  double last100 = 0;          // mean train loss over the last (up to) 100 steps
  double eval_loss = -1, eval_bpb = -1;  // -1: no eval ran
  double peak_mem_gib = 0;
  std::string impl, precision, status = "ok";
  std::string device, gpu, libtorch, commit, run_dir, date;
};

// Environment facts for the result row.
std::string gpu_name(const std::string& device);
std::string libtorch_version();
std::string git_commit();  // $ELMAN_COMMIT, else the source tree's short hash ("+dirty" if changed)
std::string now_string(const char* fmt);  // local time via strftime

std::string result_json(const Result& r);
// Writes <run_dir>/results.json and appends the row to <out_root>/results.{md,csv} (headers on creation).
void write_result(const Result& r, const std::string& out_root);

}  // namespace elman::app
