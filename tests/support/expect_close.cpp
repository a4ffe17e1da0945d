#include "tests/support/expect_close.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/support/catch.h"

namespace elman::test {

void expect_close(const std::string& name, const torch::Tensor& ref_in, const torch::Tensor& got_in, double ratio) {
  auto ref = ref_in.detach().to(torch::kCPU, torch::kDouble);
  auto got = got_in.detach().to(torch::kCPU, torch::kDouble);
  INFO(name);
  REQUIRE(ref.sizes() == got.sizes());
  const bool finite_ref = torch::isfinite(ref).all().item<bool>();
  const bool finite_got = torch::isfinite(got).all().item<bool>();
  const double max_abs = ref.numel() ? (ref - got).abs().max().item<double>() : 0.0;
  const double denom = ref.norm().item<double>();
  const double rel = denom > 0 ? (ref - got).norm().item<double>() / denom : max_abs;
  std::printf("  %-28s max_abs=%.3e rel=%.3e (limit %.1e)%s\n", name.c_str(), max_abs, rel, ratio,
              finite_ref && finite_got ? "" : "  NON-FINITE");
  CHECK(finite_ref);
  CHECK(finite_got);
  if (finite_ref && finite_got && max_abs > 1e-6) CHECK(rel < ratio);
}

torch::Tensor numeric_grad(const std::function<torch::Tensor()>& f, torch::Tensor x, double eps) {
  torch::NoGradGuard no_grad;
  auto g = torch::zeros_like(x);
  auto flat = x.view(-1);
  auto gflat = g.view(-1);
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double orig = flat[i].item<double>();
    flat[i] = orig + eps;
    const double up = f().item<double>();
    flat[i] = orig - eps;
    const double down = f().item<double>();
    flat[i] = orig;
    gflat[i] = (up - down) / (2 * eps);
  }
  return g;
}

std::string real_text_file(const std::string& dir, int64_t min_bytes) {
  namespace fs = std::filesystem;
  std::string text;
  for (const char* sub : {"app", "models", "ops", "tests", "scripts"}) {
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(fs::path(ELMAN_SOURCE_DIR) / sub))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      std::ifstream in(f, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      text += ss.str() + '\x1e';
    }
  }
  REQUIRE(text.size() > 10000);
  std::string out;
  while (static_cast<int64_t>(out.size()) < min_bytes) out += text;
  fs::create_directories(dir);
  const std::string path = dir + "/text.bin";
  std::ofstream(path, std::ios::binary) << out;
  return path;
}

}  // namespace elman::test
