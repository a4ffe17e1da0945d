// Helpers for tests that drive the real elman-train executable or need scratch files.
#pragma once
#include <string>
#include <vector>

namespace elman::test {

struct ExeResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs elman-train with `args` (shell-quoted here), waits, returns exit code and output.
ExeResult run_train_exe(const std::vector<std::string>& args);

// A fresh empty directory under the system temp dir, unique per call.
std::string scratch_dir(const std::string& tag);

// Writes `bytes` to `path`.
void write_file(const std::string& path, const std::string& bytes);

}  // namespace elman::test
