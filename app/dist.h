// Data-parallel training over LibTorch's c10d: one process per GPU (or CPU process), configured the way
// torchrun does it (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Rendezvous through a
// c10d::TCPStore served by rank 0; ProcessGroupNCCL on CUDA, ProcessGroupGloo on CPU; gradients averaged
// by c10d::Reducer (DDP's engine) in ~25 MB buckets launched from autograd hooks while backward runs.
//
// A rank that fails posts its one-line error in the store; a watcher thread on every other rank sees it,
// prints which rank failed and why, and ends its process (rank 0 first gets a few seconds to write its
// results row). Collectives time out after $ELMAN_DIST_TIMEOUT seconds (default 300).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace elman::app::dist {

// The torchrun environment. world == 1 (WORLD_SIZE absent) means a single process.
struct Env {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};
// Reads the environment; throws UsageError when it is incomplete or inconsistent.
Env env_from_environment();

class Group {
 public:
  // Joins the job: rendezvous, then the process group for `device` ("cuda": NCCL on cuda:LOCAL_RANK, which
  // becomes the current device; "cpu": Gloo over the loopback-or-hostname interface, or $GLOO_SOCKET_IFNAME).
  Group(const Env& env, const std::string& device);
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  int rank() const { return env_.rank; }
  int world() const { return env_.world; }
  int local_rank() const { return env_.local_rank; }
  bool is_main() const { return env_.rank == 0; }
  std::string backend() const { return backend_; }

  // Copies rank 0's tensors into every rank's (in place, coalesced).
  void broadcast_from_main(const std::vector<torch::Tensor>& tensors);
  // Sum over ranks, in place; `t` lives on the training device.
  void allreduce_sum(torch::Tensor& t);
  // Max over ranks of a few host numbers (agreement on elapsed time and stop flags).
  std::vector<double> allreduce_max(const std::vector<double>& values);
  void barrier();
  // Whether every rank holds the same values (compares per-tensor fp64 sums; a collective).
  bool same_on_all_ranks(const std::vector<torch::Tensor>& tensors);

  // Gradient averaging for `params` (all must require grad and receive a gradient every step), in buckets of
  // $ELMAN_DIST_BUCKET_MB (default 25; the first bucket at most 1 MB). Call before_forward() before each
  // training forward and before_backward() between forward and backward; when backward returns, every
  // param's .grad() holds the mean over ranks. Returns the number of buckets.
  int64_t attach_gradients(const std::vector<torch::Tensor>& params);
  void before_forward();
  void before_backward();

  // Tells the other ranks this rank failed (its one-line reason); they stop with a message naming it.
  void report_failure(const std::string& reason);
  // The failure another rank posted ("rank N failed: reason"), or "" when none.
  std::string peer_failure();
  // Whether this rank's failure was already posted, or another rank's seen.
  bool failure_handled() const;
  // Aborts the process group after a failure (pending collectives end; no graceful shutdown that could wait).
  void abort();
  // Stops the failure watcher: call when every rank is done (after the final barrier).
  void finish();

 private:
  struct Impl;
  Env env_;
  std::string backend_;
  std::unique_ptr<Impl> impl_;
};

// The group of this process, or nullptr for a single process. Created by train() when WORLD_SIZE > 1.
std::unique_ptr<Group> join_from_environment(const std::string& device);

}  // namespace elman::app::dist
