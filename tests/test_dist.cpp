// Data-parallel training on CPU over Gloo: two ranks with batch B train exactly as one process with batch 2B
// (same windows, averaged gradients, same weights and optimizer state), and a failing rank ends the job
// with a message instead of a hang.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "tests/support/expect_close.h"  // LibTorch before Catch: c10's glog-style CHECK must not replace Catch's
#include "tests/support/run.h"
#include "tests/support/catch.h"

using namespace elman;
namespace fs = std::filesystem;

namespace {

std::string read(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A port for a job's store: one that binds on 127.0.0.1 now, from a range of 10 per test process (by pid) below
// Linux's ephemeral ports (32768 up), so that neither a concurrent test nor an outgoing connection holds it.
int free_port() {
  static int next = 20000 + static_cast<int>(::getpid() % 1000) * 10;
  for (int tries = 0; tries < 10000; ++tries) {
    const int port = next;
    next = next + 1 < 30000 ? next + 1 : 20000;
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    if (fd >= 0) ::close(fd);
    if (ok) return port;
  }
  FAIL("no free port between 20000 and 30000");
  return -1;
}

// A child process running `argv` with extra environment variables, output to `log`.
struct Child {
  pid_t pid = -1;
  int status = -1;
  bool finished = false;
};

Child spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env, const std::string& log) {
  Child c;
  c.pid = fork();
  if (c.pid == 0) {
    signal(SIGINT, SIG_DFL);  // a test runner started in the background passes SIGINT on as ignored
    for (const char* k : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) unsetenv(k);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1), dup2(fd, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  return c;
}

// Waits for every child up to `seconds`; kills (and reports) those still running then. True if all ended.
bool wait_all(std::vector<Child*> children, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (true) {
    bool all = true;
    for (auto* c : children) {
      if (c->finished) continue;
      if (waitpid(c->pid, &c->status, WNOHANG) == c->pid) c->finished = true;
      else all = false;
    }
    if (all) return true;
    if (std::chrono::steady_clock::now() > end) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (auto* c : children)
    if (!c->finished) kill(c->pid, SIGKILL), waitpid(c->pid, &c->status, 0);
  return false;
}

int exit_code(const Child& c) { return WIFEXITED(c.status) ? WEXITSTATUS(c.status) : 128 + WTERMSIG(c.status); }

std::vector<std::string> tiny_args(const std::string& data, const std::string& out, const std::string& name, int batch) {
  return {ELMAN_TRAIN_EXE, "--model", "e61", "--dim", "32", "--depth", "2", "--batch", std::to_string(batch),
          "--chunk", "32", "--steps", "6", "--warmup", "2", "--lr", "3e-3", "--device", "cpu", "--eval-bytes", "0",
          "--data", data, "--out", out, "--name", name, "--log-every", "1"};
}

// Checkpoint tensors without the wall-clock ones: counters (step, tokens), losses, RNG, weights, AdamW state.
std::vector<torch::Tensor> checkpoint(const std::string& run_dir) {
  std::vector<torch::Tensor> list;
  torch::load(list, run_dir + "/checkpoint.pt");
  std::vector<torch::Tensor> out{list[0].narrow(0, 0, 3)};  // format, step, tokens (timed tokens differ by design)
  for (size_t i = 2; i < list.size(); ++i) out.push_back(list[i]);
  return out;
}

// Largest |a - b| over the floating tensors (per-step losses, weights, AdamW moments); the integer ones
// (counters, RNG state) must match exactly (else +inf) unless `floats_only`.
double max_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b, bool floats_only = false) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].sizes() != b[i].sizes()) return INFINITY;
    if (!a[i].is_floating_point()) {
      if (!floats_only && !torch::equal(a[i], b[i])) return INFINITY;
      continue;
    }
    if (a[i].numel()) worst = std::max(worst, (a[i].to(torch::kDouble) - b[i].to(torch::kDouble)).abs().max().item<double>());
  }
  return worst;
}

}  // namespace

#ifdef ELMAN_WITH_GLOO  // else CMake says so: CPU data-parallel runs need gloo's headers at build time
TEST_CASE("two Gloo ranks with batch 4 train exactly as one process with batch 8", "[dist][cli]") {
  const auto dir = test::scratch_dir("dist");
  const auto data = test::real_text_file(dir, 300000);
  const auto out = dir + "/runs";
  const std::string launch = std::string(ELMAN_SOURCE_DIR) + "/scripts/launch.sh";

  Child one8 = spawn(tiny_args(data, out, "one8", 8), {}, dir + "/one8.log");
  Child one4 = spawn(tiny_args(data, out, "one4", 4), {}, dir + "/one4.log");
  REQUIRE(wait_all({&one8, &one4}, 120));
  INFO(read(dir + "/one8.log") << read(dir + "/one4.log"));
  REQUIRE(exit_code(one8) == 0);
  REQUIRE(exit_code(one4) == 0);

  auto args = tiny_args(data, out, "two4", 4);
  args.insert(args.begin(), {"bash", launch, "2", "--"});
  // Small buckets (~10 KB): many allreduces in flight during backward, as at full size on a GPU.
  Child two = spawn(args, {{"MASTER_PORT", std::to_string(free_port())}, {"ELMAN_DIST_TIMEOUT", "60"}, {"ELMAN_DIST_BUCKET_MB", "0.01"}},
                    dir + "/two4.log");
  REQUIRE(wait_all({&two}, 120));
  const auto log = read(dir + "/two4.log");
  INFO(log);
  REQUIRE(exit_code(two) == 0);
  const std::string said = "data-parallel: 2 ranks over gloo, batch 4 per rank, 8 global; gradients averaged in ";
  const auto at = log.find(said);
  REQUIRE(at != std::string::npos);
  CHECK(std::stoi(log.substr(at + said.size())) > 2);  // several buckets
  CHECK(log.find("the model's tensors are identical on all 2 ranks") != std::string::npos);
  CHECK(read(out + "/two4/results.json").find("\"gpu\": \"2x cpu (gloo)\"") != std::string::npos);
  CHECK(!fs::exists(out + "/two4-2"));  // rank 1 wrote no run directory of its own

  // Weights, AdamW moments (the gradients' running averages) and per-step losses: the same up to
  // float rounding (summation order differs).
  const auto ref = checkpoint(out + "/one8"), dual = checkpoint(out + "/two4"), half = checkpoint(out + "/one4");
  const double same = max_difference(ref, dual);
  const double other = max_difference(half, dual, /*floats_only=*/true);
  WARN("max |one process x 8 - two ranks x 4| = " << same << ", max |one process x 4 - two ranks x 4| = " << other);
  CHECK(same < 1e-5);
  // The comparison can fail: rank 0 alone (its 4 rows, no averaging) trains differently by far.
  CHECK(other > 1e-3);
  CHECK(other > 1000 * same);

  // Stopped at step 3 and resumed: every rank restores the checkpoint and the run ends where a straight one does.
  auto part = tiny_args(data, out, "parted", 4);
  part.insert(part.end(), {"--stop-at-step", "3"});
  part.insert(part.begin(), {"bash", launch, "2", "--"});
  Child first = spawn(part, {{"MASTER_PORT", std::to_string(free_port())}}, dir + "/parted.log");
  REQUIRE(wait_all({&first}, 120));
  INFO(read(dir + "/parted.log"));
  REQUIRE(exit_code(first) == 0);
  {
    std::string cfg = read(out + "/parted/config.yaml");
    const auto k = cfg.find("stop-at-step: 3");
    REQUIRE(k != std::string::npos);
    cfg.replace(k, 15, "stop-at-step: 0");
    test::write_file(out + "/parted/config.yaml", cfg);
  }
  Child second = spawn({"bash", launch, "2", "--", ELMAN_TRAIN_EXE, "--resume", out + "/parted"},
                       {{"MASTER_PORT", std::to_string(free_port())}}, dir + "/resumed.log");
  REQUIRE(wait_all({&second}, 120));
  const auto resumed_log = read(dir + "/resumed.log");
  INFO(resumed_log);
  REQUIRE(exit_code(second) == 0);
  CHECK(resumed_log.find("resumed at step 3") != std::string::npos);
  CHECK(resumed_log.find("the model's tensors are identical on all 2 ranks") != std::string::npos);
  CHECK(max_difference(dual, checkpoint(out + "/parted")) < 1e-5);
}

TEST_CASE("Ctrl-C to the launcher stops every rank at the same step with a checkpoint", "[dist][cli]") {
  const auto dir = test::scratch_dir("distint");
  const auto data = test::real_text_file(dir, 300000);
  const auto out = dir + "/runs";
  auto args = tiny_args(data, out, "int", 4);
  args[std::find(args.begin(), args.end(), "--steps") - args.begin() + 1] = "100000";
  args.insert(args.begin(), {"bash", std::string(ELMAN_SOURCE_DIR) + "/scripts/launch.sh", "2", "--"});
  Child job = spawn(args, {{"MASTER_PORT", std::to_string(free_port())}, {"ELMAN_DIST_TIMEOUT", "60"}}, dir + "/int.log");
  const std::string metrics = out + "/int/metrics.jsonl";
  for (int i = 0; i < 600 && (!fs::exists(metrics) || fs::file_size(metrics) < 500); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(fs::exists(metrics));
  kill(job.pid, SIGINT);
  const bool ended = wait_all({&job}, 90);
  const auto log = read(dir + "/int.log");
  INFO(log);
  REQUIRE(ended);
  CHECK(exit_code(job) == 0);
  CHECK(log.find("the model's tensors are identical on all 2 ranks") != std::string::npos);  // both reached the end
  CHECK(read(out + "/int/results.json").find("\"status\": \"interrupted\"") != std::string::npos);
  CHECK(fs::exists(out + "/int/checkpoint.pt"));
}

TEST_CASE("a rank that fails stops the job with its reason instead of hanging", "[dist][cli]") {
  const auto dir = test::scratch_dir("distfail");
  const auto data = test::real_text_file(dir, 300000);
  const auto out = dir + "/runs";

  SECTION("a rank with an error: the other rank names it and exits") {
    const std::string port = std::to_string(free_port());
    auto env = [&](int r) {
      return std::map<std::string, std::string>{{"RANK", std::to_string(r)}, {"LOCAL_RANK", std::to_string(r)},
                                                {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"},
                                                {"MASTER_PORT", port}, {"ELMAN_DIST_TIMEOUT", "60"}};
    };
    Child r0 = spawn(tiny_args(data, out, "bad", 4), env(0), dir + "/r0.log");
    Child r1 = spawn(tiny_args(dir + "/missing.bin", out, "bad", 4), env(1), dir + "/r1.log");
    const auto t0 = std::chrono::steady_clock::now();
    const bool ended = wait_all({&r0, &r1}, 90);
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto log0 = read(dir + "/r0.log"), log1 = read(dir + "/r1.log");
    INFO("rank 0:\n" << log0 << "rank 1:\n" << log1 << "took " << took << " s");
    REQUIRE(ended);
    CHECK(exit_code(r1) == 2);
    CHECK(log1.find("elman-train: error: rank 1: cannot open data file") != std::string::npos);
    CHECK(exit_code(r0) != 0);
    CHECK(log0.find("rank 1 failed: cannot open data file") != std::string::npos);
  }

  SECTION("a rank killed mid-run: the survivor stops with a message and records the failure") {
    const std::string port = std::to_string(free_port());
    auto env = [&](int r) {
      return std::map<std::string, std::string>{{"RANK", std::to_string(r)}, {"LOCAL_RANK", std::to_string(r)},
                                                {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"},
                                                {"MASTER_PORT", port}, {"ELMAN_DIST_TIMEOUT", "60"}};
    };
    auto args = tiny_args(data, out, "killed", 4);
    args[std::find(args.begin(), args.end(), "--steps") - args.begin() + 1] = "100000";
    Child r0 = spawn(args, env(0), dir + "/k0.log");
    Child r1 = spawn(args, env(1), dir + "/k1.log");
    const std::string metrics = out + "/killed/metrics.jsonl";
    for (int i = 0; i < 600 && (!fs::exists(metrics) || fs::file_size(metrics) < 500); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    REQUIRE(fs::exists(metrics));
    kill(r1.pid, SIGKILL);
    const bool ended = wait_all({&r0, &r1}, 90);
    const auto log0 = read(dir + "/k0.log");
    INFO("rank 0:\n" << log0);
    REQUIRE(ended);
    CHECK(exit_code(r0) == 1);
    CHECK(log0.find("elman-train: error:") != std::string::npos);
    CHECK(read(out + "/killed/results.json").find("\"status\": \"failed at step") != std::string::npos);
  }
}
#endif

TEST_CASE("the launcher stops the other ranks when one exits with an error", "[dist][cli]") {
  const auto dir = test::scratch_dir("launch");
  {
    Child job = spawn({"bash", std::string(ELMAN_SOURCE_DIR) + "/scripts/launch.sh", "3", "--", "bash", "-c",
                       "if [ \"$RANK\" = 1 ]; then sleep 1; exit 7; fi; sleep 120"},
                      {}, dir + "/launch.log");
    const auto t0 = std::chrono::steady_clock::now();
    const bool ended = wait_all({&job}, 40);
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(read(dir + "/launch.log") << "took " << took << " s");
    REQUIRE(ended);
    CHECK(exit_code(job) == 7);
    CHECK(took < 30);
    CHECK(read(dir + "/launch.log").find("launch: rank 1 exited with status 7; stopping the other ranks") != std::string::npos);
  }
}
