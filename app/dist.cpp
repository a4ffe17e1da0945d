#include "app/dist.h"

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

// Gloo's own headers are not in the PyPI LibTorch; the system's (Debian: libgloo-dev) provide the
// declarations ProcessGroupGloo.hpp needs (CMake defines ELMAN_WITH_GLOO when it finds them). Without them,
// CPU data-parallel runs are refused with a message.
#if defined(USE_C10D_GLOO) && defined(ELMAN_WITH_GLOO)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#define ELMAN_HAVE_GLOO 1
#endif
#if defined(ELMAN_WITH_CUDA) && defined(USE_C10D_NCCL) && __has_include(<nccl.h>)
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#define ELMAN_HAVE_NCCL 1
#endif

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "app/config.h"

namespace elman::app::dist {
namespace {

constexpr const char* kFailedKey = "elman/failed";

int env_int(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < lo || x > hi)
    throw UsageError(std::string("environment variable ") + name + "='" + v + "' is not an integer in [" +
                     std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return static_cast<int>(x);
}

std::chrono::milliseconds timeout_from_environment() {
  return std::chrono::milliseconds(int64_t{1000} * env_int("ELMAN_DIST_TIMEOUT", 300, 1, 86400));
}

std::string first_line(const std::exception& e) {
  const auto* c10e = dynamic_cast<const c10::Error*>(&e);
  std::string s = c10e ? c10e->what_without_backtrace() : e.what();
  return s.substr(0, s.find('\n'));
}

}  // namespace

Env env_from_environment() {
  Env e;
  e.world = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  if (e.world == 1) return e;
  if (!std::getenv("RANK")) throw UsageError("WORLD_SIZE is set but RANK is not (set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT as torchrun does)");
  e.rank = env_int("RANK", 0, 0, e.world - 1);
  e.local_rank = env_int("LOCAL_RANK", e.rank, 0, 1 << 20);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  return e;
}

struct Group::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  std::unique_ptr<c10d::Reducer> reducer;
  torch::Device device = torch::kCPU;
  std::chrono::milliseconds timeout{300000};

  // Failure watcher: polls the store for a failure posted by another rank.
  std::thread watcher;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::atomic<bool> posted_here{false}, saw_peer{false}, aborted{false};
  std::string peer_failure;
};

Group::Group(const Env& env, const std::string& device) : env_(env), impl_(std::make_unique<Impl>()) {
  auto& im = *impl_;
  im.timeout = timeout_from_environment();

  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env.master_port);
  so.isServer = env.rank == 0;
  so.numWorkers = static_cast<size_t>(env.world);
  so.waitWorkers = true;
  so.timeout = im.timeout;
  try {
    im.store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(env.rank) + ": rendezvous at " + env.master_addr + ":" +
                             std::to_string(env.master_port) + " failed: " + first_line(e));
  }
  im.pg = c10::make_intrusive<c10d::ProcessGroup>(im.store, env.rank, env.world);

  if (device == "cuda") {
#ifdef ELMAN_HAVE_NCCL
    if (env.local_rank >= static_cast<int>(torch::cuda::device_count()))
      throw UsageError("LOCAL_RANK " + std::to_string(env.local_rank) + " but only " +
                       std::to_string(torch::cuda::device_count()) +
                       " CUDA devices are visible (where each process sees only its own GPU, set LOCAL_RANK=0)");
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(env.local_rank));
    im.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = im.timeout;
    opts->group_name = "0";
    im.backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(im.store, env.rank, env.world, opts);
    im.pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, im.backend);
    im.pg->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
    backend_ = "nccl";
#else
    throw UsageError("data-parallel CUDA training needs NCCL: this binary was built without CUDA or without nccl.h");
#endif
  } else {
#ifdef ELMAN_HAVE_GLOO
    auto opts = c10d::ProcessGroupGloo::Options::create(im.timeout);
    // $GLOO_SOCKET_IFNAME names the interface; else the hostname's address, falling back to loopback.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname && *ifname) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost") {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    opts->group_name = "0";
    im.backend = c10::make_intrusive<c10d::ProcessGroupGloo>(im.store, env.rank, env.world, opts);
    im.pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, im.backend);
    im.pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    backend_ = "gloo";
#else
    throw UsageError("data-parallel CPU training needs Gloo: this binary was built without the gloo headers (install libgloo-dev and rebuild)");
#endif
  }

  // The watcher has its own store connection, so it never waits behind the process group's requests.
  im.watcher = std::thread([this] {
    auto& im = *impl_;
    c10::intrusive_ptr<c10d::TCPStore> client;
    try {
      c10d::TCPStoreOptions co;
      co.port = static_cast<uint16_t>(env_.master_port);
      co.isServer = false;
      co.waitWorkers = false;
      co.timeout = std::chrono::milliseconds(10000);
      client = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, co);
    } catch (const std::exception&) {
      return;  // no watcher; timeouts still end a stuck job
    }
    std::unique_lock<std::mutex> lock(im.mu);
    while (!im.stop) {
      im.cv.wait_for(lock, std::chrono::milliseconds(500));
      if (im.stop) break;
      std::string failure;
      bool lost = false;
      lock.unlock();
      try {
        if (client->check({kFailedKey})) {
          const auto v = client->get(kFailedKey);
          failure.assign(v.begin(), v.end());
        }
      } catch (const std::exception&) {
        lost = true;  // rank 0 (the store) is gone
      }
      lock.lock();
      if (im.stop || im.posted_here) break;
      if (failure.empty() && !lost) continue;
      // A store that vanishes right after the final barrier is rank 0 ending normally: finish() comes next.
      if (lost && im.cv.wait_for(lock, std::chrono::seconds(5), [&] { return im.stop; })) break;
      if (lost) failure = "rank 0 is gone (lost the rendezvous store at " + env_.master_addr + ":" + std::to_string(env_.master_port) + ")";
      im.peer_failure = failure;
      lock.unlock();
      std::fprintf(stderr, "elman-train: error: rank %d stops: %s\n", env_.rank, failure.c_str());
      std::fflush(stderr);
      // Rank 0 gets a few seconds to record the failure in its results row; the others have nothing to save.
      abort();
      if (env_.rank == 0) {
        lock.lock();
        if (im.cv.wait_for(lock, std::chrono::seconds(10), [&] { return im.stop; })) return;  // train() is ending
      }
      std::_Exit(1);
    }
  });
}

Group::~Group() {
  finish();
  impl_->reducer.reset();
  try {
    if (!impl_->aborted) impl_->pg->shutdown();
  } catch (...) {
  }
}

void Group::abort() {
  impl_->aborted = true;
  try {
    impl_->pg->abort();
  } catch (...) {
  }
}

void Group::finish() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  if (impl_->watcher.joinable()) impl_->watcher.join();
}

void Group::broadcast_from_main(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> ts(tensors.begin(), tensors.end());
  c10d::broadcast_coalesced(impl_->pg, ts, 256 << 20, 0);
}

void Group::allreduce_sum(torch::Tensor& t) {
  std::vector<at::Tensor> ts{t};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  impl_->backend->allreduce(ts, o)->wait();
}

std::vector<double> Group::allreduce_max(const std::vector<double>& values) {
  auto t = torch::tensor(values, torch::kDouble).to(impl_->device);
  std::vector<at::Tensor> ts{t};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::MAX;
  impl_->backend->allreduce(ts, o)->wait();
  auto host = t.cpu();
  return std::vector<double>(host.data_ptr<double>(), host.data_ptr<double>() + host.numel());
}

void Group::barrier() {
  // An allreduce on the training device: a barrier that NCCL and Gloo implement the same way.
  allreduce_max({0.0});
}

bool Group::same_on_all_ranks(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> sums;
  for (const auto& t : tensors) sums.push_back(t.detach().to(impl_->device, torch::kDouble).sum());
  auto s = torch::stack(sums);
  auto both = torch::cat({s, -s});  // max of x and of -x: every rank's x is equal iff max(x) == min(x)
  std::vector<at::Tensor> ts{both};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::MAX;
  impl_->backend->allreduce(ts, o)->wait();
  const int64_t n = s.numel();
  return torch::equal(both.narrow(0, 0, n), -both.narrow(0, n, n));
}

int64_t Group::attach_gradients(const std::vector<torch::Tensor>& params) {
  double mb = 25;
  if (const char* v = std::getenv("ELMAN_DIST_BUCKET_MB"); v && *v) {
    char* end = nullptr;
    mb = std::strtod(v, &end);
    if (*end != '\0' || !(mb > 0) || mb > 4096)
      throw UsageError(std::string("ELMAN_DIST_BUCKET_MB='") + v + "' is not a size in MB in (0, 4096]");
  }
  const auto bucket_bytes = static_cast<int64_t>(mb * (1 << 20));
  const auto first_bytes = std::min<int64_t>(c10d::kDefaultFirstBucketBytes, bucket_bytes);
  std::vector<at::Tensor> ps(params.begin(), params.end());
  for (const auto& p : ps) TORCH_CHECK(p.requires_grad(), "attach_gradients: every parameter must require grad");
  // As DistributedDataParallel does: a small first bucket so communication starts early, buckets assigned in
  // reverse parameter order (the order backward produces gradients in), rebuilt after the first step from
  // the order actually observed.
  const std::vector<size_t> limits{static_cast<size_t>(first_bytes), static_cast<size_t>(bucket_bytes)};
  auto [buckets, per_bucket_limits] = c10d::compute_bucket_assignment_by_size(ps, limits);
  std::reverse(buckets.begin(), buckets.end());
  std::reverse(per_bucket_limits.begin(), per_bucket_limits.end());
  std::vector<int64_t> caps(per_bucket_limits.begin(), per_bucket_limits.end());
  const auto n_buckets = static_cast<int64_t>(buckets.size());
  c10d::verify_params_across_processes(impl_->pg, ps, std::nullopt);
  impl_->reducer = std::make_unique<c10d::Reducer>(
      ps, std::move(buckets), impl_->pg, std::vector<bool>(ps.size(), false), bucket_bytes,
      /*find_unused_parameters=*/false, /*gradient_as_bucket_view=*/false, std::unordered_map<size_t, std::string>{},
      first_bytes, /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false, caps);
  return n_buckets;
}

void Group::before_forward() {
  TORCH_CHECK(impl_->reducer, "attach_gradients() first");
  impl_->reducer->rebuild_buckets();  // a collective (after the first step only); the same call on every rank
  impl_->reducer->prepare_for_forward();
}

void Group::before_backward() { impl_->reducer->prepare_for_backward({}); }

void Group::report_failure(const std::string& reason) {
  impl_->posted_here = true;
  const std::string msg = "rank " + std::to_string(env_.rank) + " failed: " + reason;
  try {
    if (!impl_->store->check({kFailedKey})) impl_->store->set(kFailedKey, std::vector<uint8_t>(msg.begin(), msg.end()));
  } catch (...) {
    // The store may be gone with rank 0; the peers then see that instead.
  }
  // Rank 0 serves the store: keep it up a moment so the others can read why.
  if (env_.rank == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
}

std::string Group::peer_failure() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (!impl_->peer_failure.empty()) return impl_->saw_peer = true, impl_->peer_failure;
  }
  try {
    if (impl_->store->check({kFailedKey})) {
      const auto v = impl_->store->get(kFailedKey);
      std::string s(v.begin(), v.end());
      if (s.rfind("rank " + std::to_string(env_.rank) + " ", 0) != 0) return impl_->saw_peer = true, s;
    }
  } catch (...) {
  }
  return "";
}

bool Group::failure_handled() const { return impl_->posted_here || impl_->saw_peer; }

std::unique_ptr<Group> join_from_environment(const std::string& device) {
  const Env env = env_from_environment();
  if (env.world == 1) return nullptr;
  return std::make_unique<Group>(env, device);
}

}  // namespace elman::app::dist
