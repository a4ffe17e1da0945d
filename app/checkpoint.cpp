#include "app/checkpoint.h"

#include <filesystem>

namespace elman::app {
namespace {
constexpr int64_t kFormat = 1;

std::vector<torch::Tensor> rng_states() {
  std::vector<torch::Tensor> s{at::globalContext().defaultGenerator(torch::kCPU).get_state()};
  if (torch::cuda::is_available())
    for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i)
      s.push_back(at::globalContext().defaultGenerator(torch::Device(torch::kCUDA, i)).get_state());
  return s;
}
}  // namespace

// Layout: [counters(int64), times(f64), losses(f32), n_rng, rng..., model tensors..., optimizer state...]
void save_checkpoint(const std::string& path, const std::vector<torch::Tensor>& params, const AdamW& opt,
                     const Progress& pr) {
  std::vector<torch::Tensor> list;
  list.push_back(torch::tensor({kFormat, pr.step, pr.tokens, pr.timed_tokens, static_cast<int64_t>(params.size())}));
  list.push_back(torch::tensor({pr.train_s, pr.timed_s}, torch::kDouble));
  list.push_back(torch::tensor(pr.losses, torch::kFloat));
  auto rng = rng_states();
  list.push_back(torch::tensor({static_cast<int64_t>(rng.size())}));
  list.insert(list.end(), rng.begin(), rng.end());
  for (const auto& p : params) list.push_back(p.detach().cpu());
  for (const auto& s : opt.state()) list.push_back(s.detach().cpu());
  const std::string tmp = path + ".tmp";
  torch::save(list, tmp);
  std::filesystem::rename(tmp, path);  // atomic: a reader sees the old or the new checkpoint
}

Progress load_checkpoint(const std::string& path, const std::vector<torch::Tensor>& params, AdamW& opt) {
  std::vector<torch::Tensor> list;
  torch::load(list, path);
  if (list.size() < 4 || list[0].numel() != 5 || list[0][0].item<int64_t>() != kFormat)
    throw std::runtime_error("'" + path + "' is not an elman-train checkpoint of this version");
  Progress pr;
  pr.step = list[0][1].item<int64_t>(), pr.tokens = list[0][2].item<int64_t>();
  pr.timed_tokens = list[0][3].item<int64_t>();
  if (list[0][4].item<int64_t>() != static_cast<int64_t>(params.size()))
    throw std::runtime_error("checkpoint '" + path + "' has a different number of model tensors than the model");
  pr.train_s = list[1][0].item<double>(), pr.timed_s = list[1][1].item<double>();
  auto losses = list[2].contiguous();
  pr.losses.assign(losses.data_ptr<float>(), losses.data_ptr<float>() + losses.numel());
  size_t i = 3;
  const auto n_rng = list[i++].item<int64_t>();
  std::vector<torch::Tensor> rng(list.begin() + i, list.begin() + i + n_rng);
  i += n_rng;
  if (list.size() != i + params.size() + opt.state().size())
    throw std::runtime_error("checkpoint '" + path + "' does not match the model");
  {
    torch::NoGradGuard no_grad;
    for (const auto& p : params) {
      if (list[i].sizes() != p.sizes())
        throw std::runtime_error("checkpoint '" + path + "' does not match the model (parameter shapes differ)");
      p.copy_(list[i++]);
    }
  }
  opt.load_state(std::vector<torch::Tensor>(list.begin() + i, list.end()));
  auto current = rng_states();
  for (size_t k = 0; k < rng.size() && k < current.size(); ++k) {
    at::Generator gen = at::globalContext().defaultGenerator(
        k == 0 ? torch::Device(torch::kCPU) : torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(k - 1)));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(rng[k]);
  }
  return pr;
}

}  // namespace elman::app
