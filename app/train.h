// The training run: resolve config -> print it -> build model, optimizer, data -> timed loop ->
// final eval -> checkpoint and results.
#pragma once
#include <string>

#include "app/config.h"
#include "app/results.h"

namespace elman::app {

// Trains per `cmd` (a fresh run, or a resume when cmd.resume_dir is set). Always writes results.json
// and the results-table row once training has started, also when the run stops on a non-finite loss
// (status says so) or on Ctrl-C. Throws UsageError for bad configuration or data.
Result train(const Command& cmd);

}  // namespace elman::app
