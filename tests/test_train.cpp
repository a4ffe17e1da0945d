// End-to-end training: loss falls on real text, resume equals a straight run, divergence and Ctrl-C
// are recorded, and the results table is written.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <torch/csrc/autograd/profiler_kineto.h>

#include <ATen/autocast_mode.h>

#include "app/optim.h"
#include "app/train.h"
#include "models/param.h"
#include "models/registry.h"
#include "ops/common/weight_copies.h"
#include "tests/support/catch.h"
#include "tests/support/expect_close.h"
#include "tests/support/run.h"

using namespace elman;
namespace fs = std::filesystem;

namespace {
app::Command tiny_run(const std::string& model, const std::string& data, const std::string& out) {
  app::Command cmd;
  auto& c = cmd.config;
  c.model = model, c.dim = 64, c.depth = 2, c.batch = 8, c.chunk = 64, c.lr = 3e-3, c.warmup = 10;
  c.steps = 80, c.data = data, c.out = out, c.device = "cpu", c.eval_bytes = 16384, c.log_every = 40;
  return cmd;
}

std::vector<float> losses_of(const std::string& run_dir) {
  std::vector<float> out;
  std::ifstream f(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    const auto k = line.find("\"loss\": ");
    if (k != std::string::npos) out.push_back(std::stof(line.substr(k + 8)));
  }
  return out;
}

std::string read(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
}  // namespace

TEST_CASE("training on real text lowers the loss and writes the results table", "[train]") {
  const auto dir = test::scratch_dir("train");
  const auto data = test::real_text_file(dir, 400000);
  for (const char* model : {"e61", "llama"}) {
    auto res = app::train(tiny_run(model, data, dir + "/runs"));
    const auto losses = losses_of(res.run_dir);
    REQUIRE(losses.size() == 80);
    const double first = losses.front();
    double last10 = 0;
    for (size_t i = 70; i < 80; ++i) last10 += losses[i] / 10;
    INFO(model << ": first " << first << ", last-10 mean " << last10);
    CHECK(first > 5.0);
    CHECK(last10 < first - 1.5);
    CHECK(res.status == "ok");
    CHECK(res.eval_bpb > 0);
    CHECK(res.eval_bpb < 8.0);
    CHECK(res.impl == "reference");  // on CPU every model runs its LibTorch reference
    CHECK(fs::exists(res.run_dir + "/checkpoint.pt"));
    CHECK(read(res.run_dir + "/results.json").find("\"status\": \"ok\"") != std::string::npos);
  }
  const auto md = read(dir + "/runs/results.md"), csv = read(dir + "/runs/results.csv");
  CHECK(std::count(md.begin(), md.end(), '\n') == 4);  // header, rule, two rows
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 3);
  CHECK(md.find("| e61 | dim 64 depth 2") != std::string::npos);
  CHECK(md.find("| llama | dim 64 depth 2") != std::string::npos);
}

TEST_CASE("a tiny Mamba2 trains on real text with the sequential SSD reference", "[train][mamba2]") {
  const auto dir = test::scratch_dir("train-mamba2");
  auto res = app::train(tiny_run("mamba2", test::real_text_file(dir, 400000), dir + "/runs"));
  const auto losses = losses_of(res.run_dir);
  REQUIRE(losses.size() == 80);
  double last10 = 0;
  for (size_t i = 70; i < 80; ++i) last10 += losses[i] / 10;
  INFO("first " << losses.front() << ", last-10 mean " << last10);
  CHECK(losses.front() > 5.0);
  CHECK(last10 < losses.front() - 1.5);
  CHECK(res.status == "ok");
  CHECK(res.impl == "reference");
}

namespace {
// Two AdamW steps on the same weights and gradients, the second with the skip flag set: it must leave the
// weights and moments exactly as the first left them (the training loop cancels a non-finite step this way).
void check_adamw_skip(const torch::Device& dev) {
  torch::manual_seed(3);
  auto w = torch::randn({37, 5}, torch::TensorOptions().device(dev)).requires_grad_(true);
  app::AdamW opt({w}, 0.9, 0.95, 0.1);
  const auto grad = torch::randn({37, 5}, torch::TensorOptions().device(dev));
  const auto flag = torch::zeros({1}, torch::TensorOptions().device(dev));
  const auto lr = torch::full({1}, 1e-2, torch::TensorOptions().device(dev));
  const auto before = w.detach().clone();
  w.mutable_grad() = grad.clone();
  opt.step(lr, flag);
  const auto after_one = w.detach().clone();
  CHECK_FALSE(torch::equal(before, after_one));
  const auto state = opt.state();
  std::vector<torch::Tensor> moments{state[0].clone(), state[1].clone()};
  w.mutable_grad() = torch::full_like(grad, std::nan(""));
  flag.fill_(1);
  opt.step(lr, flag);
  CHECK(torch::equal(w.detach(), after_one));
  CHECK(torch::equal(opt.state()[0], moments[0]));
  CHECK(torch::equal(opt.state()[1], moments[1]));
  flag.fill_(0);
  w.mutable_grad() = grad.clone();
  opt.step(lr, flag);
  CHECK_FALSE(torch::equal(w.detach(), after_one));
  CHECK(torch::isfinite(w).all().item<bool>());
}

// Clipping inside AdamW (the gradients divided by clip_divisor in its kernel) equals an AdamW step on gradients
// scaled to the clip norm beforehand; gradients already below the clip norm are left as they are.
void check_adamw_clip(const torch::Device& dev) {
  torch::manual_seed(4);
  const auto o = torch::TensorOptions().device(dev);
  const auto init = torch::randn({300, 7}, o), grad = torch::randn({300, 7}, o) * 3;
  for (const double max_norm : {0.5, 1e6, 0.0}) {
    INFO("max norm " << max_norm);
    auto a = init.clone().requires_grad_(true), b = init.clone().requires_grad_(true);
    app::AdamW oa({a}, 0.9, 0.95, 0.1), ob({b}, 0.9, 0.95, 0.1);
    const auto lr = torch::full({1}, 1e-2, o), skip = torch::zeros({1}, o);
    a.mutable_grad() = grad.clone();
    const auto norm = app::grad_norm({a});
    CHECK(std::abs(norm.item<double>() / grad.norm().item<double>() - 1) < 1e-5);
    oa.step(lr, skip, app::clip_divisor(norm, max_norm));
    const double coef = max_norm > 0 ? std::min(1.0, max_norm / (norm.item<double>() + 1e-6)) : 1.0;
    b.mutable_grad() = grad * coef;
    ob.step(lr, skip);
    CHECK(torch::allclose(a.detach(), b.detach(), 1e-5, 1e-6));
    CHECK(torch::allclose(oa.state()[1], ob.state()[1], 1e-5, 1e-9));  // the second moment sees the clipped gradient
  }
}
}  // namespace

TEST_CASE("an AdamW step with the skip flag set changes nothing; clipping inside AdamW clips", "[train]") {
  check_adamw_skip(torch::kCPU);
  check_adamw_clip(torch::kCPU);
}

TEST_CASE("an AdamW step with the skip flag set changes nothing; clipping inside AdamW clips, on the GPU", "[train][gpu]") {
  REQUIRE(torch::cuda::is_available());
  check_adamw_skip(torch::kCUDA);
  check_adamw_clip(torch::kCUDA);
}

TEST_CASE("a weight copy is returned only in its dtype and at its weight's version", "[train]") {
  auto w = torch::randn({6, 4}), copy = w.to(torch::kBFloat16);
  CHECK_FALSE(ops::weight_copy(w, torch::kBFloat16).defined());
  ops::set_weight_copy(w, copy);
  CHECK(ops::weight_copy(w, torch::kBFloat16).is_same(copy));
  CHECK_FALSE(ops::weight_copy(w, torch::kHalf).defined());
  CHECK_FALSE(ops::weight_copy(torch::randn({6, 4}), torch::kBFloat16).defined());
  w.add_(1);  // an in-place change: the copy is stale
  CHECK_FALSE(ops::weight_copy(w, torch::kBFloat16).defined());
  ops::set_weight_copy(w, copy);
  ops::drop_weight_copy(w);
  CHECK_FALSE(ops::weight_copy(w, torch::kBFloat16).defined());
  CHECK_THROWS(ops::set_weight_copy(w, torch::zeros({4, 6})));
}

// Our AdamW kernel against ATen's _fused_adamw_ over three steps: 45 parameters (more than one launch takes) of
// awkward sizes (empty, 1, not a multiple of 4, several blocks, one not 16-byte aligned), weight decay, a gradient
// divisor on the second step; every parameter's bf16 copy equals the weight rounded and is registered at the weight's
// version, and goes stale when the weight changes otherwise.
TEST_CASE("the AdamW kernel matches ATen's fused AdamW and keeps the bf16 copies", "[train][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(5);
  const auto o = torch::TensorOptions().device(torch::kCUDA);
  std::vector<int64_t> sizes{0, 1, 3, 4, 5, 8191, 8192, 8193, 20000, 100003};
  while (sizes.size() < 45) sizes.push_back(static_cast<int64_t>(sizes.size()) * 37 + 1);
  sizes[12] = 1000;  // the unaligned one
  std::vector<torch::Tensor> ours, theirs, grads;
  const auto unaligned = torch::randn({1001}, o).narrow(0, 1, 1000);  // storage offset 1: 4-byte aligned only
  for (size_t i = 0; i < sizes.size(); ++i) {
    const auto init = i == 12 ? unaligned.detach() : torch::randn({sizes[i]}, o);
    ours.push_back(init.clone().requires_grad_(true));
    theirs.push_back(init.clone());
  }
  ours[12] = unaligned.requires_grad_(true);
  REQUIRE(reinterpret_cast<uintptr_t>(ours[12].data_ptr()) % 16 != 0);
  app::AdamW opt(ours, 0.9, 0.95, 0.1, 1e-8, /*bf16_copies=*/true);
  std::vector<torch::Tensor> m, v, st;
  for (const auto& t : theirs) m.push_back(torch::zeros_like(t)), v.push_back(torch::zeros_like(t)), st.push_back(torch::zeros({}, o));
  const auto lr = torch::full({1}, 3e-3, o), skip = torch::zeros({1}, o);
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    std::vector<torch::Tensor> g;
    for (size_t i = 0; i < ours.size(); ++i) {
      g.push_back(torch::randn({sizes[i]}, o) * (i + 1));
      ours[i].mutable_grad() = g.back().clone();
    }
    const auto divisor = step == 1 ? std::optional<torch::Tensor>(torch::full({1}, 2.5, o)) : std::nullopt;
    opt.step(lr, skip, divisor);
    at::_foreach_add_(st, 1);
    at::_fused_adamw_(theirs, g, m, v, {}, st, lr, 0.9, 0.95, 0.1, 1e-8, false, false, divisor, skip);
    for (size_t i = 0; i < ours.size(); ++i) {
      INFO("parameter " << i << " of " << sizes[i] << " elements");
      CHECK(torch::allclose(ours[i].detach(), theirs[i], 1e-6, 1e-7));
      CHECK(torch::allclose(opt.state()[3 * i], m[i], 1e-6, 1e-7));
      CHECK(torch::allclose(opt.state()[3 * i + 1], v[i], 1e-6, 1e-9));
      const auto copy = ops::weight_copy(ours[i], torch::kBFloat16);
      REQUIRE(copy.defined());
      CHECK(torch::equal(copy, ours[i].detach().to(torch::kBFloat16)));
    }
  }
  {
    torch::NoGradGuard no_grad;
    ours[7].mul_(2);
  }
  CHECK_FALSE(ops::weight_copy(ours[7], torch::kBFloat16).defined());
  CHECK(ops::weight_copy(ours[8], torch::kBFloat16).defined());
}

// Under autocast models::linear multiplies the weight's registered bf16 copy (here deliberately not the weight
// rounded, to see which one it reads), and the weight itself once the copy is stale.
TEST_CASE("models::linear reads a current weight copy under autocast", "[train][gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(6);
  const auto o = torch::TensorOptions().device(torch::kCUDA);
  auto w = torch::randn({16, 32}, o).requires_grad_(true);
  const auto x = torch::randn({4, 32}, o), other = torch::randn({16, 32}, o).to(torch::kBFloat16);
  ops::set_weight_copy(w, other);
  auto run = [&] {
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    auto y = models::linear(x, w);
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    at::autocast::clear_cache();
    return y.to(torch::kFloat);
  };
  const auto with_copy = run();
  CHECK(torch::allclose(with_copy, torch::matmul(x.to(torch::kBFloat16), other.t()).to(torch::kFloat), 1e-2, 1e-2));
  {
    torch::NoGradGuard no_grad;
    w.add_(0.0);
  }
  const auto without = run();
  CHECK(torch::allclose(without, torch::matmul(x.to(torch::kBFloat16), w.detach().to(torch::kBFloat16).t()).to(torch::kFloat),
                        1e-2, 1e-2));
  CHECK_FALSE(torch::allclose(with_copy, without, 1e-2, 1e-2));
  ops::drop_weight_copy(w);
}

TEST_CASE("N steps straight equal K steps then resume then N-K steps", "[train]") {
  const auto dir = test::scratch_dir("resume");
  const auto data = test::real_text_file(dir, 200000);
  auto straight = tiny_run("e61", data, dir + "/runs");
  straight.config.steps = 12, straight.config.name = "straight";
  auto a = app::train(straight);

  auto part = straight;
  part.config.name = "parted", part.config.stop_at_step = 5;
  auto b1 = app::train(part);
  CHECK(b1.status == "stopped at step 5");
  CHECK(b1.steps == 5);
  // The saved config still says stop at step 5; clear it as a user would edit it before resuming.
  {
    std::string cfg = read(b1.run_dir + "/config.yaml");
    const auto k = cfg.find("stop-at-step: 5");
    REQUIRE(k != std::string::npos);
    cfg.replace(k, 15, "stop-at-step: 0");
    test::write_file(b1.run_dir + "/config.yaml", cfg);
  }
  app::Command resume;
  resume.resume_dir = b1.run_dir;
  auto b2 = app::train(resume);
  CHECK(b2.steps == 12);
  CHECK(losses_of(a.run_dir) == losses_of(b1.run_dir));
  std::vector<torch::Tensor> ca, cb;
  torch::load(ca, a.run_dir + "/checkpoint.pt");
  torch::load(cb, b2.run_dir + "/checkpoint.pt");
  REQUIRE(ca.size() == cb.size());
  // Counters: step and tokens match; the timed-token count differs by design (each process's first
  // step is a warm-up and is not timed).
  CHECK(torch::equal(ca[0].narrow(0, 0, 3), cb[0].narrow(0, 0, 3)));
  for (size_t i = 1; i < ca.size(); ++i) {
    if (ca[i].scalar_type() == torch::kDouble) continue;  // wall-clock times differ
    INFO("checkpoint tensor " << i);
    CHECK(torch::equal(ca[i], cb[i]));
  }
}

namespace {
void check_divergence(const std::string& device) {
  const auto dir = test::scratch_dir("nan-" + device);
  const auto data = test::real_text_file(dir, 200000);
  auto cmd = tiny_run("e61", data, dir + "/runs");
  cmd.config.lr = 1e30, cmd.config.warmup = 0, cmd.config.grad_clip = 0, cmd.config.device = device;
  // A profile of more steps than the run lasts: it is still recording when the run diverges, and must be
  // stopped (the process used to exit with Kineto running and crash). Not on the GPU, where profiled steps
  // are not pipelined.
  if (device == "cpu") cmd.config.profile = 1000;
  auto res = app::train(cmd);
  INFO(res.status);
  CHECK(res.status.rfind("diverged: non-finite", 0) == 0);
  CHECK(res.steps < 80);
  CHECK_FALSE(torch::autograd::profiler::isProfilerEnabledInMainThread());
  CHECK_FALSE(fs::exists(res.run_dir + "/profile.txt"));
  CHECK(read(res.run_dir + "/results.json").find("diverged") != std::string::npos);
  CHECK(read(dir + "/runs/results.csv").find("diverged") != std::string::npos);
  CHECK(losses_of(res.run_dir).size() == static_cast<size_t>(res.steps));  // the steps before it, all finite
}
}  // namespace

TEST_CASE("a diverging run stops with a clear status and still writes its results row", "[train]") {
  check_divergence("cpu");
}

// On the GPU the next step is already launched when the host sees the non-finite loss (pipelined steps).
TEST_CASE("a diverging run on the GPU stops with a clear status", "[train][gpu]") {
  REQUIRE(torch::cuda::is_available());
  check_divergence("cuda");
}

TEST_CASE("Ctrl-C stops cleanly with a checkpoint and a results row", "[train][cli]") {
  const auto dir = test::scratch_dir("sigint");
  const auto data = test::real_text_file(dir, 200000);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    dup2(null, 1), dup2(null, 2);
    execl(ELMAN_TRAIN_EXE, ELMAN_TRAIN_EXE, "--model", "e61", "--dim", "64", "--depth", "2", "--batch", "8",
          "--chunk", "64", "--time", "5m", "--device", "cpu", "--data", data.c_str(), "--out",
          (dir + "/runs").c_str(), "--name", "run", static_cast<char*>(nullptr));
    _exit(127);
  }
  const std::string metrics = dir + "/runs/run/metrics.jsonl";
  for (int i = 0; i < 600 && (!fs::exists(metrics) || fs::file_size(metrics) < 200); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(fs::exists(metrics));
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(fs::exists(dir + "/runs/run/checkpoint.pt"));
  CHECK(read(dir + "/runs/run/results.json").find("\"status\": \"interrupted\"") != std::string::npos);
}

TEST_CASE("a tiny E61 trains on the GPU with the kernel in bf16", "[train][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto dir = test::scratch_dir("gputrain");
  const auto data = test::real_text_file(dir, 400000);
  auto cmd = tiny_run("e61", data, dir + "/runs");
  cmd.config.device = "cuda", cmd.config.profile = 3;
  auto res = app::train(cmd);
  const auto losses = losses_of(res.run_dir);
  double last10 = 0;
  for (size_t i = 70; i < 80; ++i) last10 += losses[i] / 10;
  REQUIRE(losses.size() == 80);  // every step booked, the pipelined ones too
  CHECK(res.impl == "kernel+graph");  // --cuda-graph auto: on for a single-process CUDA run
  CHECK(res.precision == "bf16");
  CHECK(last10 < losses.front() - 1.5);
  // --profile 3: a kernel-time table of steps 2-4 (with our scan kernel in it) and a Chrome trace.
  const auto table = read(res.run_dir + "/profile.txt");
  CHECK(table.rfind("profile of 3 steps:", 0) == 0);
  CHECK(table.find("gated_diag") != std::string::npos);
  CHECK(fs::file_size(res.run_dir + "/profile.json") > 0);
}

// Every model's training step can be captured as a CUDA graph, and replaying it trains as the eager steps do:
// the per-step losses of --cuda-graph on and off agree (the learning rate changes every step in the warmup and
// every step reads new bytes, so a graph replaying stale inputs would show from step 2 on). A second eager run
// measures how far a model's kernels differ from run to run (atomic float sums; the difference grows step by step,
// so only the first 4 steps are compared: the eager one, the captured one and two replays); the graph run may
// differ that much, not more.
TEST_CASE("every model's training step replays as a CUDA graph with the eager steps' losses", "[train][gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto dir = test::scratch_dir("graph");
  const auto data = test::real_text_file(dir, 200000);
  const size_t steps = 4;
  for (const auto& spec : models::all_models()) {
    std::vector<std::vector<float>> losses;
    for (const std::string mode : {"off", "on", "off"}) {
      auto cmd = tiny_run(spec.name, data, dir + "/runs");
      auto& c = cmd.config;
      c.device = "cuda", c.dim = 128, c.steps = static_cast<int64_t>(steps), c.eval_bytes = 0, c.cuda_graph = mode;
      c.name = spec.name + "-" + mode + "-" + std::to_string(losses.size());
      const auto res = app::train(cmd);
      INFO(spec.name << " with --cuda-graph " << mode << ": " << res.status);
      REQUIRE(res.status == "ok");
      CHECK(res.impl == (mode == "on" ? "kernel+graph" : "kernel"));
      losses.push_back(losses_of(res.run_dir));
      REQUIRE(losses.back().size() == steps);
    }
    auto largest_difference = [&](size_t a, size_t b) {
      double worst = 0;
      for (size_t i = 0; i < steps; ++i) {
        const double d = std::abs(losses[a][i] - losses[b][i]);
        if (!(d <= worst)) worst = d;  // a NaN sticks
      }
      return worst;
    };
    const double graph = largest_difference(0, 1), eager = largest_difference(0, 2);
    std::printf("%-6s largest loss difference over %zu steps: graph vs eager %.2e, eager vs eager %.2e\n",
                spec.name.c_str(), steps, graph, eager);
    INFO(spec.name << ": graph vs eager " << graph << ", eager vs eager " << eager);
    CHECK(graph <= 1e-3 + 4 * eager);  // NaN fails too
  }
}
