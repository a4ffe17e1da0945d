#include "app/config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdlib>
#include <cxxopts.hpp>
#include <functional>
#include <sstream>

#include "models/registry.h"

namespace elman::app {
namespace {

std::string format_number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::string format_duration(double s) {
  if (s == 0) return "0";
  if (std::fmod(s, 60.0) == 0) return format_number(s / 60) + "m";
  return format_number(s) + "s";
}

int64_t parse_int(const std::string& key, const std::string& v) {
  size_t pos = 0;
  long long x = 0;
  try {
    x = std::stoll(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos == 0 || pos != v.size()) throw UsageError("invalid value '" + v + "' for " + key + ": expected an integer");
  return x;
}

double parse_real(const std::string& key, const std::string& v) {
  size_t pos = 0;
  double x = 0;
  try {
    x = std::stod(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos == 0 || pos != v.size() || !std::isfinite(x))
    throw UsageError("invalid value '" + v + "' for " + key + ": expected a number");
  return x;
}

struct Option {
  std::string key;
  std::string help;
  std::function<void(Config&, const std::string&)> set;
  std::function<std::string(const Config&)> get;
};

Option str(const char* key, std::string Config::*m, const char* help) {
  return {key, help, [m](Config& c, const std::string& v) { c.*m = v; }, [m](const Config& c) { return c.*m; }};
}
Option integer(const char* key, int64_t Config::*m, const char* help) {
  std::string k = key;
  return {key, help, [m, k](Config& c, const std::string& v) { c.*m = parse_int("--" + k, v); },
          [m](const Config& c) { return std::to_string(c.*m); }};
}
Option real(const char* key, double Config::*m, const char* help) {
  std::string k = key;
  return {key, help, [m, k](Config& c, const std::string& v) { c.*m = parse_real("--" + k, v); },
          [m](const Config& c) { return format_number(c.*m); }};
}
Option duration(const char* key, double Config::*m, const char* help) {
  return {key, help, [m](Config& c, const std::string& v) { c.*m = parse_duration(v); },
          [m](const Config& c) { return format_duration(c.*m); }};
}

// The one list of run options: command-line flags and YAML keys share these names.
const std::vector<Option>& options() {
  static const std::vector<Option> opts = {
      str("model", &Config::model, "model name (see --list-models)"),
      integer("dim", &Config::dim, "residual width (default: the model's)"),
      integer("depth", &Config::depth, "number of blocks (default: the model's)"),
      real("expansion", &Config::expansion, "cell width = dim * expansion (cells that take it)"),
      integer("heads", &Config::heads, "heads (attention, multi-head cells)"),
      integer("nstate", &Config::nstate, "state size (matrix-state cells)"),
      integer("blocks", &Config::blocks, "memory blocks (sparse block memory, e87)"),
      integer("topk", &Config::topk, "blocks updated per step (sparse block memory, e87)"),
      integer("slots", &Config::slots, "state slots, 1 to 16 (slot-matrix cell, e63m)"),
      str("state", &Config::state, "e74 state: full (n x n matrix) | diagonal [full]"),
      str("update", &Config::update, "e74 update: delta | simple (diagonal only) [delta]"),
      str("projection", &Config::projection, "e74 projections: tiedkvq | noz | full (diagonal: all; full state: noz) [noz]"),
      str("nonlinearity", &Config::nonlinearity, "e74 state nonlinearity: tanh | linear (diagonal simple only) [tanh]"),
      str("key", &Config::key, "key of the matrix-state Elman cells e63m, e70-e73: l2 (normalised) | raw (the reference's) [model's]"),
      str("params", &Config::params, "target size, e.g. 100m: picks dim at --depth from the exact count"),
      str("impl", &Config::impl, "auto | kernel | reference | chunked (cell implementation)"),
      str("data", &Config::data, "training data: a file of raw bytes"),
      integer("eval-bytes", &Config::eval_bytes, "held-out tail of the data file for eval (0 = no eval)"),
      duration("time", &Config::time_s, "wall-clock training budget, e.g. 10m, 600s (0 = none)"),
      integer("steps", &Config::steps, "step budget (0 = none)"),
      integer("stop-at-step", &Config::stop_at_step, "stop early at this step, resumable (0 = off)"),
      integer("batch", &Config::batch, "sequences per step"),
      integer("chunk", &Config::chunk, "bytes per sequence"),
      real("lr", &Config::lr, "peak learning rate"),
      integer("warmup", &Config::warmup, "linear warmup steps, then cosine decay to 0 over the budget"),
      real("weight-decay", &Config::weight_decay, "AdamW weight decay"),
      real("grad-clip", &Config::grad_clip, "gradient norm clip (0 = off)"),
      real("beta1", &Config::beta1, "AdamW beta1"),
      real("beta2", &Config::beta2, "AdamW beta2"),
      integer("seed", &Config::seed, "seed for init and data windows"),
      str("precision", &Config::precision, "auto | bf16 | fp32 (bf16 = autocast, fp32 master weights)"),
      str("device", &Config::device, "auto | cuda | cpu"),
      str("out", &Config::out, "output root: run directories and the results table"),
      str("name", &Config::name, "run directory name (default: <model>-<timestamp>)"),
      duration("checkpoint-every", &Config::checkpoint_every_s, "checkpoint interval (0 = only at the end)"),
      integer("log-every", &Config::log_every, "progress line every N steps"),
      str("cuda-graph", &Config::cuda_graph, "auto | on | off: run each training step as one captured CUDA graph (auto = on for single-process CUDA runs)"),
      integer("profile", &Config::profile, "profile N steps after the first: kernel-time table in the log and RUN_DIR/profile.txt"),
  };
  return opts;
}

const Option* find_option(const std::string& key) {
  for (const auto& o : options())
    if (o.key == key) return &o;
  return nullptr;
}

std::string option_keys() {
  std::string s;
  for (const auto& o : options()) s += (s.empty() ? "" : ", ") + o.key;
  return s;
}

}  // namespace

namespace {
// A non-negative number with an optional unit suffix (a character -> scale); -1 when malformed.
double parse_with_suffix(const std::string& s, const std::vector<std::pair<char, double>>& units) {
  if (s.empty()) return -1;
  double scale = 1;
  std::string num = s;
  for (const auto& [suffix, unit] : units)
    if (s.back() == suffix) scale = unit, num.pop_back();
  size_t pos = 0;
  double v = -1;
  try {
    v = std::stod(num, &pos);
  } catch (const std::exception&) {
    return -1;
  }
  return pos == num.size() && std::isfinite(v) && v >= 0 ? v * scale : -1;
}
}  // namespace

double parse_duration(const std::string& s) {
  const double v = parse_with_suffix(s, {{'s', 1}, {'m', 60}, {'h', 3600}});
  if (v < 0) throw UsageError("invalid duration '" + s + "' for --time: use e.g. 600, 600s, 10m or 1.5h");
  return v;
}

int64_t parse_count(const std::string& s) {
  const double v = parse_with_suffix(s, {{'k', 1e3}, {'K', 1e3}, {'m', 1e6}, {'M', 1e6}, {'b', 1e9}, {'B', 1e9}, {'g', 1e9}, {'G', 1e9}});
  if (!(v > 0) || v > 1e13) throw UsageError("invalid size '" + s + "' for --params: use e.g. 100m, 1.5b or 95000000");
  return static_cast<int64_t>(std::llround(v));
}

void apply_yaml_file(Config& c, const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw UsageError("cannot read config file '" + path + "': check the path");
  } catch (const YAML::Exception& e) {
    throw UsageError("config file '" + path + "' is not valid YAML (line " + std::to_string(e.mark.line + 1) +
                     "): " + e.msg);
  }
  if (root.IsNull()) return;  // an empty file sets nothing
  if (!root.IsMap()) throw UsageError("config file '" + path + "' must be a mapping of option: value");
  for (const auto& kv : root) {
    const auto key = kv.first.as<std::string>();
    const Option* opt = find_option(key);
    if (!opt) throw UsageError("config file '" + path + "': unknown key '" + key + "' (valid keys: " + option_keys() + ")");
    if (!kv.second.IsScalar())
      throw UsageError("config file '" + path + "': key '" + key + "' must have a single value");
    try {
      opt->set(c, kv.second.as<std::string>());
    } catch (const UsageError& e) {
      throw UsageError("config file '" + path + "': " + e.what());
    }
  }
}

Command parse_command_line(int argc, const char* const* argv) {
  cxxopts::Options cli("elman-train", "Train byte-level language models under a wall-clock budget.");
  cli.set_width(100);
  auto add = cli.add_options();
  add("h,help", "show this help");
  add("list-models", "list the model names");
  add("config", "YAML file of option: value defaults (flags override)", cxxopts::value<std::string>());
  add("resume", "continue the run in this run directory (its saved config is used)", cxxopts::value<std::string>());
  const Config defaults;
  for (const auto& o : options()) {
    const auto d = o.get(defaults);
    add(o.key, o.help + (d.empty() || d == "0" ? "" : " [" + d + "]"), cxxopts::value<std::string>());
  }

  cxxopts::ParseResult args;
  try {
    args = cli.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    throw UsageError(std::string(e.what()) + " (see --help)");
  }
  if (!args.unmatched().empty()) throw UsageError("unexpected argument '" + args.unmatched().front() + "' (see --help)");

  Command cmd;
  if (args.count("help")) {
    cmd.kind = Command::Help;
    cmd.help = cli.help() + "\nModels: " + models::model_names() + "\n";
    return cmd;
  }
  if (args.count("list-models")) {
    cmd.kind = Command::ListModels;
    return cmd;
  }
  if (args.count("resume")) {
    cmd.resume_dir = args["resume"].as<std::string>();
    for (const auto& o : options())
      if (args.count(o.key))
        throw UsageError("--resume continues a run with its saved config; drop --" + o.key);
    if (args.count("config")) throw UsageError("--resume continues a run with its saved config; drop --config");
    return cmd;
  }
  if (args.count("config")) apply_yaml_file(cmd.config, args["config"].as<std::string>());
  for (const auto& o : options())
    if (args.count(o.key)) o.set(cmd.config, args[o.key].as<std::string>());
  return cmd;
}

models::ModelConfig resolve(Config& c) {
  if (const auto sized = models::parse_sized_name(c.model)) {  // e.g. E75h4n32 = e75 --heads 4 --nstate 32,
                                                                // 87b16k4 = e87 --blocks 16 --topk 4 --nstate 16
    auto take = [&](int64_t& field, int64_t value, const std::string& key) {
      if (value == 0) return;
      if (field != 0 && field != value)
        throw UsageError("--" + key + " " + std::to_string(field) + " contradicts model name '" + c.model +
                         "'; drop one of them");
      field = value;
    };
    take(c.heads, sized->heads, "heads");
    take(c.nstate, sized->nstate, "nstate");
    take(c.blocks, sized->blocks, "blocks");
    take(c.topk, sized->topk, "topk");
    c.model = sized->model;
  }
  const models::ModelSpec* spec = nullptr;
  try {
    spec = &models::find_model(c.model);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  auto reject_unused = [&](unsigned flag, bool given, const char* key) {
    if (given && !(spec->uses & flag)) throw UsageError("model '" + c.model + "' does not take --" + key);
  };
  reject_unused(models::kExpansion, c.expansion != 0, "expansion");
  reject_unused(models::kHeads, c.heads != 0, "heads");
  reject_unused(models::kNstate, c.nstate != 0, "nstate");
  reject_unused(models::kBlocks, c.blocks != 0, "blocks");
  reject_unused(models::kTopk, c.topk != 0, "topk");
  reject_unused(models::kSlots, c.slots != 0, "slots");
  reject_unused(models::kCellOptions, !c.state.empty(), "state");
  reject_unused(models::kCellOptions, !c.update.empty(), "update");
  reject_unused(models::kCellOptions, !c.projection.empty(), "projection");
  reject_unused(models::kCellOptions, !c.nonlinearity.empty(), "nonlinearity");
  reject_unused(models::kKey, !c.key.empty(), "key");
  if (c.dim < 0 || c.depth < 0 || c.heads < 0 || c.nstate < 0 || c.blocks < 0 || c.topk < 0 || c.slots < 0 ||
      c.expansion < 0)
    throw UsageError("model sizes (--dim, --depth, --heads, --nstate, --blocks, --topk, --slots, --expansion) must be positive");

  // Device, precision, implementation.
  const bool have_cuda = torch::cuda::is_available();
  if (c.device == "auto") c.device = have_cuda ? "cuda" : "cpu";
  if (c.device != "cuda" && c.device != "cpu") throw UsageError("--device must be auto, cuda or cpu, got '" + c.device + "'");
  if (c.device == "cuda" && !have_cuda) throw UsageError("--device cuda: no CUDA device is visible; use --device cpu");
  if (c.precision == "auto") c.precision = c.device == "cuda" ? "bf16" : "fp32";
  if (c.precision != "bf16" && c.precision != "fp32") throw UsageError("--precision must be auto, bf16 or fp32, got '" + c.precision + "'");
  if (c.precision == "bf16" && c.device != "cuda") throw UsageError("--precision bf16 (autocast) needs --device cuda; use --precision fp32 on CPU");
  const char* world = std::getenv("WORLD_SIZE");
  const bool data_parallel = world && std::atoi(world) > 1;
  if (c.cuda_graph == "auto") c.cuda_graph = c.device == "cuda" && !data_parallel ? "on" : "off";
  if (c.cuda_graph != "on" && c.cuda_graph != "off") throw UsageError("--cuda-graph must be auto, on or off, got '" + c.cuda_graph + "'");
  if (c.cuda_graph == "on" && c.device != "cuda") throw UsageError("--cuda-graph on needs --device cuda; use --cuda-graph off on CPU");
  if (c.cuda_graph == "on" && data_parallel) throw UsageError("--cuda-graph on is not supported in data-parallel runs; use --cuda-graph off");
  if (c.impl == "auto") c.impl = c.device == "cuda" ? "kernel" : "reference";
  const std::string choices = std::string("auto, kernel") + (spec->chunked ? ", chunked" : "") + " or reference";
  if (c.impl != "kernel" && c.impl != "reference" && !(c.impl == "chunked" && spec->chunked))
    throw UsageError("--impl must be " + choices + ", got '" + c.impl + "'");
  if (c.impl == "kernel" && c.device != "cuda") throw UsageError("--impl kernel runs on CUDA only; use --device cuda or --impl reference");
  if (c.impl == "kernel" && !ops::built_with_cuda()) throw UsageError("--impl kernel: this binary was built without CUDA; rebuild with nvcc on PATH or use --impl reference");

  models::ModelConfig m = spec->defaults;
  m.name = c.model;
  if (c.depth) m.depth = c.depth;
  if (c.expansion) m.expansion = c.expansion;
  if (c.heads) m.heads = c.heads;
  if (c.nstate) m.nstate = c.nstate;
  if (c.blocks) m.blocks = c.blocks;
  if (c.topk) m.topk = c.topk;
  if (c.slots) m.slots = c.slots;
  using Pair = std::pair<const std::string*, std::string*>;
  for (auto [given, field] : {Pair{&c.state, &m.state}, Pair{&c.update, &m.update}, Pair{&c.projection, &m.projection},
                              Pair{&c.nonlinearity, &m.nonlinearity}, Pair{&c.key, &m.key}})
    if (!given->empty()) *field = *given;
  m.impl = c.impl == "kernel" ? ops::Impl::Kernel : c.impl == "chunked" ? ops::Impl::Chunked : ops::Impl::Reference;
  if (!c.params.empty()) {
    if (c.dim) throw UsageError("give either --dim or --params, not both");
    try {
      m.dim = models::dim_for_params(m, parse_count(c.params));
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
    c.params.clear();  // resolved into dim
  } else if (c.dim) {
    m.dim = c.dim;
  }
  try {
    models::count_params(m);  // builds on the meta device: rejects unsupported sizes now, not mid-run
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  c.dim = m.dim, c.depth = m.depth, c.expansion = (spec->uses & models::kExpansion) ? m.expansion : 0;
  c.heads = (spec->uses & models::kHeads) ? m.heads : 0;
  c.nstate = (spec->uses & models::kNstate) ? m.nstate : 0;
  c.blocks = (spec->uses & models::kBlocks) ? m.blocks : 0;
  c.topk = (spec->uses & models::kTopk) ? m.topk : 0;
  c.slots = (spec->uses & models::kSlots) ? m.slots : 0;
  c.state = m.state, c.update = m.update, c.projection = m.projection, c.nonlinearity = m.nonlinearity;
  c.key = m.key;

  // Budget and optimisation.
  if (c.time_s <= 0 && c.steps <= 0) throw UsageError("no budget: give --time (e.g. 10m) or --steps");
  if (c.steps < 0) throw UsageError("--steps must be positive");
  if (c.stop_at_step < 0) throw UsageError("--stop-at-step must be positive");
  if (c.batch < 1 || c.chunk < 1) throw UsageError("--batch and --chunk must be at least 1");
  if (c.warmup < 0 || c.log_every < 1) throw UsageError("--warmup must be >= 0 and --log-every >= 1");
  if (c.profile < 0) throw UsageError("--profile must be >= 0 (steps to profile; 0 = off)");
  if (!(c.lr > 0)) throw UsageError("--lr must be positive");
  if (c.beta1 < 0 || c.beta1 >= 1 || c.beta2 < 0 || c.beta2 >= 1) throw UsageError("--beta1 and --beta2 must be in [0, 1)");
  if (c.weight_decay < 0 || c.grad_clip < 0 || c.eval_bytes < 0 || c.checkpoint_every_s < 0)
    throw UsageError("--weight-decay, --grad-clip, --eval-bytes and --checkpoint-every must be >= 0");
  if (c.data.empty()) throw UsageError("--data is empty: give a file of raw bytes (scripts/prepare_corpus.sh makes one)");
  if (c.out.empty()) throw UsageError("--out is empty");
  return m;
}

std::vector<std::pair<std::string, std::string>> config_rows(const Config& c) {
  std::vector<std::pair<std::string, std::string>> rows;
  for (const auto& o : options()) rows.emplace_back(o.key, o.get(c));
  return rows;
}

std::string config_yaml(const Config& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const auto& [k, v] : config_rows(c)) out << YAML::Key << k << YAML::Value << v;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string config_table(const Config& c) {
  std::ostringstream os;
  for (const auto& [k, v] : config_rows(c)) {
    os << "  " << k << std::string(k.size() < 18 ? 18 - k.size() : 1, ' ') << (v.empty() ? "-" : v) << "\n";
  }
  return os.str();
}

}  // namespace elman::app
