#include "app/results.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#ifdef ELMAN_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace elman::app {
namespace {

std::string fixed(double v, int digits) {
  if (v < 0) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') o += '\\', o += ch;
    else if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", ch);
      o += buf;
    } else o += ch;
  }
  return o + "\"";
}

std::string json_number(double v) { return v < 0 || !std::isfinite(v) ? "null" : fixed(v, 6); }

std::string run_command(const std::string& cmd) {
  std::array<char, 256> buf{};
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "";
  while (fgets(buf.data(), buf.size(), p)) out += buf.data();
  pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

// Column name and value for the results table, in order.
std::vector<std::pair<std::string, std::string>> columns(const Result& r) {
  return {{"model", r.model},
          {"config", r.config},
          {"params", std::to_string(r.params)},
          {"steps", std::to_string(r.steps)},
          {"tokens", std::to_string(r.tokens)},
          {"wall s", fixed(r.wall_s, 1)},
          {"tok/s", fixed(r.tok_s, 0)},
          {"last-100 loss", fixed(r.last100, 4)},
          {"eval loss", fixed(r.eval_loss, 4)},
          {"eval bpb", fixed(r.eval_bpb, 4)},
          {"peak mem GiB", fixed(r.peak_mem_gib, 2)},
          {"impl", r.impl},
          {"precision", r.precision},
          {"status", r.status},
          {"gpu", r.gpu},
          {"libtorch", r.libtorch},
          {"commit", r.commit},
          {"date", r.date},
          {"run", r.run_dir}};
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char ch : s) o += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return o + "\"";
}

void append(const std::string& path, const std::string& header, const std::string& row) {
  const bool fresh = !std::filesystem::exists(path) || std::filesystem::file_size(path) == 0;
  std::ofstream f(path, std::ios::app);
  if (!f) throw std::runtime_error("cannot write results table '" + path + "'");
  f << (fresh ? header : "") << row;
}

}  // namespace

std::string gpu_name(const std::string& device) {
  if (device != "cuda") return "cpu";
#ifdef ELMAN_WITH_CUDA
  return at::cuda::getCurrentDeviceProperties()->name;
#else
  return "cuda (name unknown: built without CUDA)";
#endif
}

std::string libtorch_version() { return TORCH_VERSION; }

std::string git_commit() {
  if (const char* env = std::getenv("ELMAN_COMMIT"); env && *env) return env;  // trees copied without .git
  const std::string dir = ELMAN_SOURCE_DIR;
  std::string hash = run_command("git -C '" + dir + "' rev-parse --short HEAD 2>/dev/null");
  if (hash.empty()) return "unknown";
  if (!run_command("git -C '" + dir + "' status --porcelain --untracked-files=no 2>/dev/null").empty()) hash += "+dirty";
  return hash;
}

std::string now_string(const char* fmt) {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, fmt, std::localtime(&t));
  return buf;
}

std::string result_json(const Result& r) {
  std::ostringstream o;
  o << "{\n  \"model\": " << json_string(r.model) << ",\n  \"config\": " << json_string(r.config)
    << ",\n  \"params\": " << r.params << ",\n  \"steps\": " << r.steps << ",\n  \"tokens\": " << r.tokens
    << ",\n  \"wall_s\": " << json_number(r.wall_s) << ",\n  \"tok_s\": " << json_number(r.tok_s)
    << ",\n  \"last100_loss\": " << json_number(r.last100) << ",\n  \"eval_loss\": " << json_number(r.eval_loss)
    << ",\n  \"eval_bpb\": " << json_number(r.eval_bpb) << ",\n  \"peak_mem_gib\": " << json_number(r.peak_mem_gib)
    << ",\n  \"impl\": " << json_string(r.impl) << ",\n  \"precision\": " << json_string(r.precision)
    << ",\n  \"status\": " << json_string(r.status) << ",\n  \"device\": " << json_string(r.device)
    << ",\n  \"gpu\": " << json_string(r.gpu) << ",\n  \"libtorch\": " << json_string(r.libtorch)
    << ",\n  \"commit\": " << json_string(r.commit) << ",\n  \"date\": " << json_string(r.date)
    << ",\n  \"run_dir\": " << json_string(r.run_dir) << "\n}\n";
  return o.str();
}

void write_result(const Result& r, const std::string& out_root) {
  {
    const std::string path = r.run_dir + "/results.json";
    std::ofstream f(path + ".tmp");
    f << result_json(r);
    f.close();
    if (!f) throw std::runtime_error("cannot write '" + path + "'");
    std::filesystem::rename(path + ".tmp", path);
  }
  std::string md_head = "|", md_rule = "|", md_row = "|", csv_head, csv_row;
  for (const auto& [name, value] : columns(r)) {
    md_head += " " + name + " |", md_rule += "---|", md_row += " " + value + " |";
    csv_head += (csv_head.empty() ? "" : ",") + csv_field(name);
    csv_row += (csv_row.empty() ? "" : ",") + csv_field(value);
  }
  append(out_root + "/results.md", md_head + "\n" + md_rule + "\n", md_row + "\n");
  append(out_root + "/results.csv", csv_head + "\n", csv_row + "\n");
}

}  // namespace elman::app
