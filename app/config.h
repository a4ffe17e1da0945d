// A run's configuration: one typed struct, one table of options (options.cpp) that serves the command
// line, the YAML files and the printed/saved config alike. Precedence: defaults < --config YAML < flags.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/model_config.h"

namespace elman::app {

// A user error: printed as one line, exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Config {
  // model (0 means: the model's default)
  std::string model = "e61";
  int64_t dim = 0, depth = 0, heads = 0, nstate = 0, blocks = 0, topk = 0, slots = 0;
  double expansion = 0;
  std::string state, update, projection, nonlinearity;  // E74 cell options ("" = the model's default)
  std::string key;  // matrix-state Elman key normalisation, l2 | raw ("" = the model's default)
  std::string params;        // e.g. "100m": choose dim from the exact parameter count at this depth
  std::string impl = "auto";  // auto | kernel | reference (auto = kernel on CUDA, reference on CPU)
  // data
  std::string data = "data/default_corpus.bin";
  int64_t eval_bytes = 2 << 20;  // held-out tail of the file (at most a tenth of it); 0 = no eval
  // budget and optimisation
  double time_s = 0;        // wall-clock training budget; 0 = none
  int64_t steps = 0;        // step budget; 0 = none (at least one budget is required)
  int64_t stop_at_step = 0;  // stop early at this step (checkpoint, resumable); 0 = off
  int64_t batch = 32, chunk = 512, warmup = 100;
  double lr = 3e-4, weight_decay = 0.01, grad_clip = 1.0, beta1 = 0.9, beta2 = 0.95;
  int64_t seed = 42;
  std::string precision = "auto";  // auto | bf16 | fp32 (auto = bf16 autocast on CUDA, fp32 on CPU)
  std::string device = "auto";     // auto | cuda | cpu
  // output
  std::string out = "runs";
  std::string name;                // run directory name under out (default: <model>-<timestamp>)
  double checkpoint_every_s = 600;  // also written at the end; 0 = only at the end
  int64_t log_every = 10;
  std::string cuda_graph = "auto";  // auto | on | off (auto = on for single-process CUDA runs)
  int64_t profile = 0;  // profile this many steps after the warm-up (0 = off)
};

struct Command {
  enum Kind { Train, Help, ListModels } kind = Train;
  Config config;           // ignored with --resume: the run's saved config.yaml is used
  std::string resume_dir;  // with --resume: the run directory to continue
  std::string help;        // with Help: the usage text
};

// Parses argv (and the --config YAML it names). Throws UsageError with a one-line message.
Command parse_command_line(int argc, const char* const* argv);

// Loads a YAML config file on top of `c` (unknown keys and bad values are errors).
void apply_yaml_file(Config& c, const std::string& path);

// Fills model defaults, picks dim from --params, resolves auto device/precision/impl and checks
// everything. Returns the model configuration to build. Throws UsageError.
models::ModelConfig resolve(Config& c);

// The resolved config as (key, value) rows, in option order; and as YAML text (re-loadable).
std::vector<std::pair<std::string, std::string>> config_rows(const Config& c);
std::string config_yaml(const Config& c);
std::string config_table(const Config& c);

// "600", "600s", "10m", "1.5h" -> seconds. Throws UsageError.
double parse_duration(const std::string& s);
// "100m", "1.5b", "95000000" -> count. Throws UsageError.
int64_t parse_count(const std::string& s);

}  // namespace elman::app
