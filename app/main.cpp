// elman-train: command-line entry point. Errors the user can fix print as one line and exit 2.
#include <cstdio>

#include "app/config.h"
#include "app/train.h"
#include "models/registry.h"

int main(int argc, char** argv) {
  using namespace elman;
  try {
    const auto cmd = app::parse_command_line(argc, argv);
    switch (cmd.kind) {
      case app::Command::Help: std::fputs(cmd.help.c_str(), stdout); return 0;
      case app::Command::ListModels:
        for (const auto& m : models::all_models()) std::printf("%-8s %s\n", m.name.c_str(), m.description.c_str());
        return 0;
      case app::Command::Train: break;
    }
    const auto res = app::train(cmd);
    if (res.run_dir.empty()) return res.status.rfind("diverged", 0) == 0 ? 3 : 0;  // a data-parallel rank other than 0: rank 0 reports
    std::printf("\n%s | %s | %ld params | %ld steps | %.0f tok/s | last-100 loss %.4f | eval bpb %s | %s\n",
                res.model.c_str(), res.config.c_str(), static_cast<long>(res.params), static_cast<long>(res.steps),
                res.tok_s, res.last100, res.eval_bpb < 0 ? "-" : std::to_string(res.eval_bpb).c_str(), res.status.c_str());
    std::printf("results: %s/results.json\n", res.run_dir.c_str());
    return res.status.rfind("diverged", 0) == 0 ? 3 : 0;
  } catch (const app::UsageError& e) {
    std::fprintf(stderr, "elman-train: error: %s\n", e.what());
    return 2;
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    std::fprintf(stderr, "elman-train: error: %s\n", msg.substr(0, msg.find('\n')).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "elman-train: error: %s\n", e.what());
    return 1;
  }
}
