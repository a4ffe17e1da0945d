// Model registry: one line per model in registry.cpp maps a name to its mixer factory, its defaults
// and the options it takes. Unknown names fail with the list of valid names.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "models/mixer.h"
#include "models/model_config.h"

namespace elman::models {

// Bit flags for the model options a model takes besides dim and depth.
// kCellOptions: --state, --update, --projection, --nonlinearity (E74). kSlots: --slots (E63m). kKey: --key (E63m, E70-E73).
enum Uses : unsigned { kExpansion = 1, kHeads = 2, kNstate = 4, kBlocks = 8, kTopk = 16, kCellOptions = 32, kSlots = 64, kKey = 128 };

// The LM's pre-norms and final norm: RMSNorm (weight only) or LayerNorm (weight and bias); both eps 1e-5.
enum class Norm { RMS, Layer };

struct ModelSpec {
  std::string name;
  std::string description;
  std::function<MixerPtr(const ModelConfig&)> mixer;  // the block's mixer
  std::function<MixerPtr(const ModelConfig&)> mlp;    // optional second sub-block (Llama's SwiGLU)
  ModelConfig defaults;                               // dim, depth, expansion, heads, nstate, blocks, topk, slots
  unsigned uses = 0;                                  // Uses flags
  Norm norm = Norm::RMS;                              // the LM's pre-norms and final norm
  bool chunked = false;  // also has a LibTorch chunked scan, --impl chunked (mamba2, gdn); every model has our kernels
};

const std::vector<ModelSpec>& all_models();
const ModelSpec& find_model(const std::string& name);  // throws std::invalid_argument listing valid names
std::string model_names();

// The seed reports' names that carry sizes: "E75h4n32" (or "e75h4n32") is e75 with heads 4 and nstate 32,
// "E75h4" is e75 with heads 4 and its default nstate (0 here). "87b16k4" (or "E87b16k4", "e87b16k4") is e87 with
// blocks 16 and topk 4 and the n_state the spec's level names fix (b4, b6 -> 32, b8 -> 24, b16, b32 -> 16; other
// block counts: the model's default, 0 here); "87b4k2n48" gives n_state explicitly. Any other name: nullopt.
struct SizedName {
  std::string model;
  int64_t heads = 0, nstate = 0, blocks = 0, topk = 0;
};
std::optional<SizedName> parse_sized_name(const std::string& name);                             // "e61, llama"

// Exact parameter count of a model, computed by building it on the meta device (no memory, no init).
// Throws std::invalid_argument when the configuration is not buildable (e.g. dim not divisible by heads).
int64_t count_params(ModelConfig cfg);

// The dim (a multiple of 128, at most 8192) whose exact parameter count at cfg.depth is closest to
// `target`. Throws std::invalid_argument if none is within 25% of the target.
int64_t dim_for_params(ModelConfig cfg, int64_t target);

}  // namespace elman::models
