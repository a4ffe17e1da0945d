#include "app/train.h"

#include <ATen/autocast_mode.h>
#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <optional>
#if __has_include(<c10/cuda/CUDACachingAllocator.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#define ELMAN_HAVE_CUDA_ALLOCATOR 1
#endif

#include "app/checkpoint.h"
#include "app/data.h"
#include "app/dist.h"
#include "app/log.h"
#include "app/optim.h"
#include "app/profile.h"
#include "app/step_graph.h"
#include "models/lm.h"

namespace elman::app {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted = true; }

// bf16 autocast on CUDA for the scope; clears the cast cache when the outermost scope ends so the next
// forward sees the updated fp32 weights.
class Autocast {
 public:
  explicit Autocast(bool on) : on_(on) {
    if (!on_) return;
    prev_ = at::autocast::is_autocast_enabled(at::kCUDA);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~Autocast() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, prev_);
  }

 private:
  bool on_, prev_ = false;
};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string hms(double s) {
  const int64_t t = static_cast<int64_t>(s);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%ld:%02ld", static_cast<long>(t / 60), static_cast<long>(t % 60));
  return buf;
}

double peak_memory_gib(const std::string& device) {
#ifdef ELMAN_HAVE_CUDA_ALLOCATOR
  if (device == "cuda") {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 30);
  }
#endif
  return 0;
}

// Next-byte loss over every eval window; returns mean loss (nats per byte).
double evaluate(models::LM& model, const ByteData& data, int64_t batch, const torch::Device& dev, bool bf16) {
  torch::NoGradGuard no_grad;
  model->eval();
  const int64_t n = data.eval_windows();
  double total = 0;
  for (int64_t first = 0; first < n; first += batch) {
    const int64_t count = std::min(batch, n - first);
    auto b = data.eval_batch(first, count).to(dev).to(torch::kLong);
    Autocast ac(bf16);
    auto loss = model->loss(b.narrow(1, 0, b.size(1) - 1), b.narrow(1, 1, b.size(1) - 1));
    total += loss.item<double>() * static_cast<double>(count);
  }
  model->train();
  return total / static_cast<double>(n);
}

std::string model_summary(const Config& c) {
  std::string s = "dim " + std::to_string(c.dim) + " depth " + std::to_string(c.depth);
  if (c.expansion) {
    std::ostringstream os;
    os << c.expansion;
    s += " expansion " + os.str();
  }
  if (c.heads) s += " heads " + std::to_string(c.heads);
  if (c.nstate) s += " nstate " + std::to_string(c.nstate);
  if (c.blocks) s += " blocks " + std::to_string(c.blocks);
  if (c.topk) s += " topk " + std::to_string(c.topk);
  if (c.slots) s += " slots " + std::to_string(c.slots);
  return s;
}

// The run of one process; `group` is its data-parallel group (nullptr: a single process). With a group,
// rank 0 alone writes the run directory, logs, checkpoints and results; every rank reads a resumed checkpoint.
Result run(const Command& cmd, Config cfg, const models::ModelConfig& mcfg, dist::Group* group) {
  const bool resuming = !cmd.resume_dir.empty();
  const bool main_rank = !group || group->is_main();
  const int64_t world = group ? group->world() : 1;
  const torch::Device dev = cfg.device != "cuda" ? torch::Device(torch::kCPU)
                            : group ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(group->local_rank()))
                                    : torch::Device(torch::kCUDA);
  const bool bf16 = cfg.precision == "bf16";

  ByteData data(cfg.data, cfg.chunk, cfg.eval_bytes);  // validates the data file before any output

  // Run directory.
  std::string run_dir = cmd.resume_dir;
  if (!resuming && main_rank) {
    const std::string base = cfg.out + "/" + (cfg.name.empty() ? cfg.model + "-" + now_string("%Y%m%d-%H%M%S") : cfg.name);
    run_dir = base;
    for (int k = 2; fs::exists(run_dir); ++k) {
      if (!cfg.name.empty()) throw UsageError("run directory '" + run_dir + "' exists: choose another --name, or --resume it");
      run_dir = base + "-" + std::to_string(k);
    }
    fs::create_directories(run_dir);
    std::ofstream(run_dir + "/config.yaml") << config_yaml(cfg);
  } else if (resuming && !fs::exists(run_dir + "/checkpoint.pt")) {
    throw UsageError("cannot resume '" + run_dir + "': it has no checkpoint.pt");
  }

  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  models::LM model(mcfg);
  model->to(dev);
  model->train();
  const auto params = model->parameters();
  auto model_tensors = params;  // what a checkpoint keeps: parameters, then buffers
  for (const auto& b : model->buffers()) model_tensors.push_back(b);
  AdamW opt(params, cfg.beta1, cfg.beta2, cfg.weight_decay, 1e-8, /*bf16_copies=*/bf16 && dev.is_cuda());
  Progress pr;
  if (resuming) {
    try {
      pr = load_checkpoint(run_dir + "/checkpoint.pt", model_tensors, opt);
    } catch (const std::exception& e) {
      throw UsageError(std::string("cannot resume '") + run_dir + "': " + e.what());
    }
  }
  int64_t n_buckets = 0;
  if (group) {
    // Every rank starts from rank 0's weights (equal by seed or checkpoint already; this makes it certain);
    // gradients are then averaged in buckets during backward.
    group->broadcast_from_main(model_tensors);
    n_buckets = group->attach_gradients(params);
  }

  Result res;
  res.model = cfg.model, res.config = model_summary(cfg), res.params = model->num_params();
  res.impl = cfg.impl + (cfg.cuda_graph == "on" ? "+graph" : ""), res.precision = cfg.precision, res.device = cfg.device, res.gpu = gpu_name(cfg.device);
  res.libtorch = libtorch_version(), res.commit = git_commit(), res.run_dir = run_dir;
  if (group) res.gpu = std::to_string(world) + "x " + res.gpu + " (" + group->backend() + ")";

  if (main_rank) {
    log::info(log::format("%s %s: %ld parameters, impl %s, %s on %s", resuming ? "resuming" : "training",
                          cfg.model.c_str(), static_cast<long>(res.params), cfg.impl.c_str(), cfg.precision.c_str(),
                          res.gpu.c_str()));
    std::printf("config (%s/config.yaml):\n%s", run_dir.c_str(), config_table(cfg).c_str());
    log::info(log::format("data %s: %ld bytes (%ld train, %ld eval)", cfg.data.c_str(), static_cast<long>(data.size()),
                          static_cast<long>(data.train_size()), static_cast<long>(data.eval_size())));
    if (resuming) log::info(log::format("resumed at step %ld (%s of training done)", static_cast<long>(pr.step), hms(pr.train_s).c_str()));
    if (group)
      log::info(log::format("data-parallel: %ld ranks over %s, batch %ld per rank, %ld global; gradients averaged in %ld buckets",
                            static_cast<long>(world), group->backend().c_str(), static_cast<long>(cfg.batch),
                            static_cast<long>(cfg.batch * world), static_cast<long>(n_buckets)));
    std::fflush(stdout);
  }

  std::ofstream metrics;
  if (main_rank) metrics.open(run_dir + "/metrics.jsonl", std::ios::app);
  const std::string ckpt_path = run_dir + "/checkpoint.pt";
  const int64_t tokens_per_step = cfg.batch * cfg.chunk * world;  // global
  auto progress_of = [&](const Progress& p) {
    double f = 0;
    if (cfg.time_s > 0) f = std::max(f, p.train_s / cfg.time_s);
    if (cfg.steps > 0) f = std::max(f, static_cast<double>(p.step) / static_cast<double>(cfg.steps));
    return f;
  };

  g_interrupted = false;
  auto prev_handler = std::signal(SIGINT, on_sigint);
  auto last_ckpt = Clock::now();
  int64_t log_tokens = 0;
  double log_s = 0;
  std::string stop_reason = "ok";
  bool abnormal = false;    // diverged or failed: that state is never checkpointed
  bool interrupted = false;  // with a group: Ctrl-C seen by any rank, agreed after each step
  StepProfiler profiler(main_rank ? cfg.profile : 0);  // one rank's profile

  // Steps are pipelined on a GPU: the host launches step k, then waits for step k-1 and does its bookkeeping
  // (loss, grad norm, time, log) while step k runs, so the GPU does not wait for the host between steps. The
  // finite check is therefore made on the device: a non-finite loss or grad norm sets a flag that stays set
  // and turns every later optimizer step into a no-op, so when the host sees it the weights are still those of
  // the last good step. A step's time runs from the end of the step before (or from its launch, whichever is
  // later) to its end. Checkpoints, the end of the run and profiled steps (--profile) wait for the step in
  // flight (are drained); on the CPU, and with a data-parallel group, every step is.
  struct Launched {
    int64_t step;
    double lr;
    bool timed;
    Clock::time_point start;
    torch::Tensor host;             // loss, grad norm; filled by an asynchronous copy
    std::optional<c10::Event> end;  // recorded after the step's last kernel (GPU only)
  };
  const bool pinned = dev.is_cuda();
  // With a group, every rank must run the same collectives in the same order, and the per-step agreement on
  // time and Ctrl-C is itself a synchronisation: steps run one at a time there.
  const bool pipelined = dev.is_cuda() && !group;
  // With --cuda-graph on, the first step runs eagerly (it warms up), the second is captured as a CUDA graph
  // and every step from then on is one replay of it: the batch and the learning rate are copied into the
  // tensors the graph reads, and the gradients stay allocated (the graph writes them) instead of being dropped.
  std::unique_ptr<StepGraph> graph;
  if (cfg.cuda_graph == "on") graph = std::make_unique<StepGraph>(dev);
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  auto nonfinite = torch::zeros({1}, f32), lr_now = torch::zeros({1}, f32);
  torch::Tensor batch_now, stats;  // the step's input bytes and its (loss, grad norm)
  auto step_body = [&] {
    auto batch = batch_now.to(torch::kLong);
    torch::Tensor loss;
    if (group) group->before_forward();
    {
      Autocast ac(bf16);
      loss = model->loss(batch.narrow(1, 0, cfg.chunk), batch.narrow(1, 1, cfg.chunk));
    }
    if (group) group->before_backward();
    loss.backward();  // with a group, returns with the gradients averaged over ranks
    auto gnorm = grad_norm(params);
    auto loss_f = loss.detach().to(torch::kFloat);
    if (group) {  // the global batch's loss: the mean of the ranks' losses
      loss_f = loss_f.reshape({1});
      group->allreduce_sum(loss_f);
      loss_f = loss_f[0] / static_cast<double>(world);
    }
    stats = torch::stack({loss_f, gnorm.to(torch::kFloat)});
    nonfinite.copy_(torch::maximum(nonfinite, torch::isfinite(stats).all().logical_not().to(torch::kFloat).reshape({1})));
    opt.step(lr_now, nonfinite, clip_divisor(gnorm, cfg.grad_clip));  // clipped inside AdamW's kernel
  };
  int64_t launched = 0;  // steps launched by this process
  const int64_t warmup_steps = graph ? 2 : 1;  // not timed: the first step, and the capture
  auto launch = [&](int64_t step, double lr) {
    Launched l{step, lr, launched >= warmup_steps, Clock::now(), torch::Tensor(), std::nullopt};
    // Rank r of N reads rows r*B .. (r+1)*B-1 of the step's N*B windows.
    const int64_t first_row = group ? group->rank() * cfg.batch : 0;
    auto batch = data.train_batch(static_cast<uint64_t>(cfg.seed), step, cfg.batch, first_row);
    if (pinned) batch = batch.pin_memory();
    if (!batch_now.defined() || !graph) batch_now = torch::empty(batch.sizes(), batch.options().device(dev));
    batch_now.copy_(batch, /*non_blocking=*/pinned);
    lr_now.fill_(lr);
    if (!graph || launched == 0) {
      step_body();
      opt.zero_grad();
    } else if (!graph->captured()) {
      graph->capture(step_body, cfg.model);
    } else {
      graph->replay();
    }
    ++launched;
    l.host = torch::empty({2}, torch::TensorOptions().dtype(torch::kFloat).pinned_memory(pinned));
    l.host.copy_(stats, /*non_blocking=*/pinned);
    if (dev.is_cuda()) {
      l.end.emplace(c10::DeviceType::CUDA);
      l.end->record(c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(dev));
    }
    return l;
  };
  auto last_end = Clock::now();
  double last_dt = 0;
  // Waits for a launched step and books it; false when the run must stop (it diverged).
  auto finish = [&](const Launched& l) {
    if (l.end) l.end->synchronize();
    double dt = std::chrono::duration<double>(Clock::now() - std::max(last_end, l.start)).count();
    last_end = Clock::now();
    const float loss_v = l.host[0].item<float>(), gnorm_v = l.host[1].item<float>();
    if (!std::isfinite(loss_v) || !std::isfinite(gnorm_v)) {
      stop_reason = std::string("diverged: non-finite ") + (std::isfinite(loss_v) ? "grad norm" : "loss") +
                    " at step " + std::to_string(l.step);
      abnormal = true;
      return false;
    }
    if (group) {  // one clock for all: the slowest rank's step time; and any rank's Ctrl-C stops all
      const auto agreed = group->allreduce_max({dt, g_interrupted ? 1.0 : 0.0});
      dt = agreed[0], interrupted = agreed[1] > 0;
    }
    if (const auto table = profiler.after_step(dt, run_dir); !table.empty() && main_rank) log::info(table);
    last_dt = dt;
    pr.train_s += dt;
    pr.tokens += tokens_per_step;
    if (l.timed) pr.timed_s += dt, pr.timed_tokens += tokens_per_step;
    pr.losses.push_back(loss_v);
    ++pr.step;
    log_tokens += tokens_per_step, log_s += dt;
    if (!main_rank) return true;
    metrics << "{\"step\": " << pr.step << ", \"loss\": " << loss_v << ", \"lr\": " << l.lr << ", \"grad_norm\": " << gnorm_v
            << ", \"step_ms\": " << dt * 1e3 << ", \"train_s\": " << pr.train_s << "}\n";
    if (pr.step % cfg.log_every == 0 || pr.step == 1) {
      const double remaining = cfg.time_s > 0 ? std::max(0.0, cfg.time_s - pr.train_s) : 0.0;
      log::info(log::format("step %6ld | loss %.4f | lr %.2e | gnorm %.2f | %.1f ms | %.1fK tok/s | %s / %s",
                            static_cast<long>(pr.step), loss_v, l.lr, gnorm_v, dt * 1e3,
                            log_tokens / std::max(log_s, 1e-9) / 1e3, hms(pr.train_s).c_str(),
                            cfg.time_s > 0 ? hms(pr.train_s + remaining).c_str()
                                           : (std::to_string(cfg.steps) + " steps").c_str()));
      log_tokens = 0, log_s = 0;
    }
    return true;
  };

  // A failure inside the loop (out of memory, a kernel error) ends the run with status "failed at step N: ...":
  // the results row is still written, the last good checkpoint is kept, and train() then rethrows.
  std::string failure;
  std::optional<Launched> in_flight;
  auto drain = [&] {
    if (!in_flight) return true;
    const Launched l = std::move(*in_flight);
    in_flight.reset();
    return finish(l);
  };
  try {
    while (true) {
      // Decisions count the step in flight as done, taking as long as the step before.
      Progress ahead = pr;
      if (in_flight) ahead.step += 1, ahead.train_s += last_dt;
      if (progress_of(ahead) >= 1.0) break;
      if (cfg.stop_at_step > 0 && ahead.step >= cfg.stop_at_step) { stop_reason = "stopped at step " + std::to_string(ahead.step); break; }
      if (group ? interrupted : g_interrupted.load()) { stop_reason = "interrupted"; break; }
      if (main_rank && cfg.checkpoint_every_s > 0 && seconds_since(last_ckpt) >= cfg.checkpoint_every_s) {
        if (!drain()) break;
        metrics.flush();
        save_checkpoint(ckpt_path, model_tensors, opt, pr);
        last_ckpt = Clock::now();
        log::info(log::format("checkpoint written at step %ld", static_cast<long>(pr.step)));
      }
      const bool warm = launched >= warmup_steps;
      const bool profiled = profiler.records(warm);
      if (profiled && !drain()) break;  // the profile holds its own steps' kernels only
      profiler.before_step(warm);
      auto next = launch(ahead.step, lr_at(cfg.lr, ahead.step, cfg.warmup, progress_of(ahead)));
      if (!drain()) break;  // the step launched meanwhile is a no-op: the flag is set
      in_flight = std::move(next);
      if ((profiled || !pipelined) && !drain()) break;
    }
    if (!abnormal) drain();
  } catch (const std::exception& e) {
    const auto* c10e = dynamic_cast<const c10::Error*>(&e);
    failure = c10e ? c10e->what_without_backtrace() : e.what();
    failure = failure.substr(0, failure.find('\n'));
    if (group) {
      // A collective that fails because another rank failed: report that rank's reason, not the symptom.
      if (const auto peer = group->peer_failure(); !peer.empty()) failure = peer + " (here: " + failure + ")";
      else group->report_failure(failure), failure = "rank " + std::to_string(group->rank()) + ": " + failure;
    }
    stop_reason = "failed at step " + std::to_string(pr.step) + ": " + failure;
    abnormal = true;
    opt.zero_grad();
  }
  std::signal(SIGINT, prev_handler);
  graph.reset();  // its memory pool and the gradients it wrote are released before the eval
  opt.zero_grad();

  // Ranks apply the same averaged gradients to the same weights: check they still agree.
  bool ranks_agree = true;
  if (group && failure.empty() && !abnormal) ranks_agree = group->same_on_all_ranks(model_tensors);  // all ranks agree on abnormal
  if (!main_rank) {
    if (!failure.empty()) throw std::runtime_error(stop_reason);
    group->barrier();  // rank 0 checkpoints, evaluates and writes results meanwhile
    group->finish();
    res.steps = pr.step, res.status = stop_reason;
    return res;
  }
  if (group && failure.empty() && !abnormal) {
    if (ranks_agree) log::info(log::format("the model's tensors are identical on all %ld ranks", static_cast<long>(world)));
    else stop_reason = "failed: the model's tensors differ across ranks at step " + std::to_string(pr.step), abnormal = true;
  }
  // An abnormal state is not checkpointed: the last good checkpoint (if any) stays as it was.
  if (!abnormal && pr.step > 0) save_checkpoint(ckpt_path, model_tensors, opt, pr);
  if (!abnormal && cfg.eval_bytes > 0 && stop_reason == "ok") {
    res.eval_loss = evaluate(model, data, cfg.batch, dev, bf16);
    res.eval_bpb = res.eval_loss / std::log(2.0);
    metrics << "{\"step\": " << pr.step << ", \"eval_loss\": " << res.eval_loss << ", \"eval_bpb\": " << res.eval_bpb << "}\n";
  }
  metrics.flush();

  const size_t n = pr.losses.size(), k = std::min<size_t>(n, 100);
  res.last100 = k ? std::accumulate(pr.losses.end() - k, pr.losses.end(), 0.0) / static_cast<double>(k) : -1;
  res.steps = pr.step, res.tokens = pr.tokens, res.wall_s = pr.train_s;
  res.tok_s = pr.timed_s > 0 ? static_cast<double>(pr.timed_tokens) / pr.timed_s : 0;
  res.peak_mem_gib = peak_memory_gib(cfg.device);
  res.status = stop_reason;
  res.date = now_string("%Y-%m-%d %H:%M");
  write_result(res, cfg.out);
  if (abnormal) log::error(cfg.model + ": " + stop_reason + " (results row written; last good checkpoint kept)");
  if (!failure.empty()) throw std::runtime_error(stop_reason);
  if (group) group->barrier(), group->finish();
  return res;
}

}  // namespace

Result train(const Command& cmd) {
  Config cfg = cmd.config;
  if (!cmd.resume_dir.empty()) {
    cfg = Config();
    apply_yaml_file(cfg, cmd.resume_dir + "/config.yaml");
  }
  models::ModelConfig mcfg = resolve(cfg);
  // Data-parallel when launched with WORLD_SIZE > 1 (torchrun's variables): join the group first, so that a
  // rank failing in set-up (bad data path, existing run directory) stops the others with its reason.
  auto group = dist::join_from_environment(cfg.device);
  if (!group) return run(cmd, cfg, mcfg, nullptr);
  try {
    return run(cmd, cfg, mcfg, group.get());
  } catch (const std::exception& e) {
    const auto* c10e = dynamic_cast<const c10::Error*>(&e);
    std::string why = c10e ? c10e->what_without_backtrace() : e.what();
    why = why.substr(0, why.find('\n'));
    const std::string here = "rank " + std::to_string(group->rank()) + ": ";
    if (!group->failure_handled()) {  // not yet attributed (a failure in set-up or after the loop)
      if (const auto peer = group->peer_failure(); !peer.empty()) why = peer + " (" + here + why + ")";
      else group->report_failure(why), why = here + why;
    }
    group->abort();
    if (dynamic_cast<const UsageError*>(&e)) throw UsageError(why);
    throw std::runtime_error(why);
  }
}

}  // namespace elman::app
