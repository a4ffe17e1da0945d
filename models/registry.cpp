#include "models/registry.h"

#include <cstdlib>
#include <regex>
#include <stdexcept>

#include "models/lm.h"
#include "models/mixers/dense_elman.h"
#include "models/mixers/delta_matrix.h"
#include "models/mixers/gated_deltanet.h"
#include "models/mixers/gated_diag.h"
#include "models/mixers/llama.h"
#include "models/mixers/mamba2.h"
#include "models/mixers/matrix_elman.h"
#include "models/mixers/slot_matrix.h"
#include "models/mixers/sparse_block.h"

namespace elman::models {
namespace {
template <typename M>
MixerPtr make(const ModelConfig& c) {
  return std::make_shared<M>(c);
}
ModelConfig defaults(int64_t dim, int64_t depth, double expansion = 0, int64_t heads = 0, int64_t nstate = 0,
                     int64_t blocks = 0, int64_t topk = 0) {
  ModelConfig c;
  c.dim = dim, c.depth = depth, c.expansion = expansion, c.heads = heads, c.nstate = nstate;
  c.blocks = blocks, c.topk = topk;
  return c;
}
ModelConfig e74_defaults() {  // the full-matrix configuration that ran (spec 2.18)
  auto c = defaults(1536, 20, 2.0, 0, 32);
  c.state = "full", c.update = "delta", c.projection = "noz", c.nonlinearity = "tanh";
  return c;
}
ModelConfig e63m_defaults() {  // N = 8 slots, the LadderLM default that ran (spec 2.8); key l2 (raw diverges)
  auto c = defaults(640, 20, 2.0);
  c.slots = 8, c.key = "l2";
  return c;
}
ModelConfig matrix_defaults(const char* key) {  // E70-E73 at 100M (spec 2.14-2.17): n_state 96; key l2 | raw
  auto c = defaults(1408, 20, 2.0, 0, 96);
  c.key = key;
  return c;
}
}  // namespace

const std::vector<ModelSpec>& all_models() {
  static const std::vector<ModelSpec> models = {
      // name    description                                         mixer                 mlp            defaults                uses        [norm chunked]
      {"e1", "E1 gated Elman, spectral-norm W_h (spec 2.2)", make_dense_elman<DenseCell::E1>, nullptr, defaults(640, 20, 2.0), kExpansion},
      {"e42", "E42 linear tied self-gated Elman (spec 2.3)", make_dense_elman<DenseCell::E42>, nullptr, defaults(768, 20, 2.0), kExpansion},
      {"e56", "E56 concat Elman (spec 2.4)", make_dense_elman<DenseCell::E56>, nullptr, defaults(640, 20, 2.0), kExpansion},
      {"e61", "E61 decay-gated Elman (spec 2.5)", make_gated_diag<ops::DiagCell::E61>, nullptr, defaults(640, 20, 2.0), kExpansion},
      {"e62", "E62 selective-write Elman (spec 2.6)", make_gated_diag<ops::DiagCell::E62>, nullptr, defaults(640, 20, 2.0), kExpansion},
      {"e63", "E63 nonlinear delta Elman (spec 2.7)", make_dense_elman<DenseCell::E63>, nullptr, defaults(512, 20, 2.0), kExpansion},
      {"e63m", "E63m slot-matrix nonlinear cell, N slots x D state, --slots N (spec 2.8); --key l2 (raw diverges)", make<SlotMatrixMixer>, nullptr, e63m_defaults(), kExpansion | kSlots | kKey},
      {"e64", "E64 additive-h Elman (spec 2.9)", make_gated_diag<ops::DiagCell::E64>, nullptr, defaults(640, 20, 2.0), kExpansion},
      {"e65", "E65 diagonal-h Elman (spec 2.10)", make_gated_diag<ops::DiagCell::E65>, nullptr, defaults(640, 20, 2.0), kExpansion},
      {"e66", "E66 low-rank-h Elman, rank max(D/4, 16) (spec 2.11)", make_dense_elman<DenseCell::E66>, nullptr, defaults(640, 20, 2.0), kExpansion},
      {"e67", "E67 h-gated Elman (spec 2.12)", make_gated_diag<ops::DiagCell::E67>, nullptr, defaults(640, 20, 2.0), kExpansion},
      {"e68", "E68 self-gating Elman (spec 2.13)", make_gated_diag<ops::DiagCell::E68>, nullptr, defaults(640, 20, 2.0), kExpansion},
      {"e70", "E70 matrix linear, S = lambda S + v k^T, trained decay, spectral-norm W_k/W_v (spec 2.14)", make_matrix_elman<ops::MatrixCell::E70>, nullptr, matrix_defaults("raw"), kExpansion | kNstate | kKey},
      {"e71", "E71 matrix S-gated, alpha = sigmoid(a + d_alpha S k + b_alpha) (spec 2.15); --key l2 (raw diverges)", make_matrix_elman<ops::MatrixCell::E71>, nullptr, matrix_defaults("l2"), kExpansion | kNstate | kKey},
      {"e72", "E72 matrix self-gate, v gated by sigmoid(d_g S k + b_g) (spec 2.16); --key l2 (raw diverges)", make_matrix_elman<ops::MatrixCell::E72>, nullptr, matrix_defaults("l2"), kExpansion | kNstate | kKey},
      {"e73", "E73 matrix nonlinear, S = tanh(S diag(z) + v k^T) (spec 2.17)", make_matrix_elman<ops::MatrixCell::E73>, nullptr, matrix_defaults("raw"), kExpansion | kNstate | kKey},
      {"e74", "E74 delta-rule memory (spec 2.18, 2.19): --state full (matrix) | diagonal, --update, --projection, --nonlinearity", make_e74, nullptr, e74_defaults(), kNstate | kCellOptions},
      {"e75", "E75 multi-head gated delta-rule memory (spec 2.20); E75h4n32 = --heads 4 --nstate 32", make_delta_matrix<DeltaCell::E75>, nullptr, defaults(1920, 20, 1.0, 4, 32), kHeads | kNstate},
      {"e87", "E87 sparse block memory, top-K routed delta-rule blocks (spec 2.21); E87b16k4 = --blocks 16 --topk 4 --nstate 16", make<SparseBlockMixer>, nullptr, defaults(1920, 20, 1.0, 0, 16, 16, 4), kNstate | kBlocks | kTopk},
      {"gdn", "GatedDeltaNet (FLA-GDN H1): dim/128 heads, key dim 128, value dim 256, short conv 4, output gate (spec 2.22)", make<GatedDeltaNetMixer>, nullptr, defaults(768, 20), kHeads, Norm::RMS, true},
      {"llama", "Llama transformer: RoPE attention + SwiGLU (spec 2.22)", make<LlamaAttention>, make<SwiGLU>, defaults(640, 20), kHeads},
      {"mamba2", "Mamba2 SSD, d_state 128, headdim 64, expand 2, LayerNorm pre-norm (spec 2.22)", make<Mamba2Mixer>, nullptr, defaults(896, 20), 0, Norm::Layer, true},
  };
  return models;
}

const ModelSpec& find_model(const std::string& name) {
  for (const auto& m : all_models())
    if (m.name == name) return m;
  throw std::invalid_argument("unknown model '" + name + "' (valid models: " + model_names() + ")");
}

std::optional<SizedName> parse_sized_name(const std::string& name) {
  static const std::regex e75(R"([Ee]75h([1-9][0-9]{0,3})(?:n([1-9][0-9]{0,3}))?)");
  static const std::regex e87(R"((?:[Ee])?87b([1-9][0-9]{0,3})k([1-9][0-9]{0,3})(?:n([1-9][0-9]{0,3}))?)");
  std::smatch m;
  if (std::regex_match(name, m, e75))
    return SizedName{"e75", std::stoll(m[1].str()), m[2].matched ? std::stoll(m[2].str()) : 0};
  if (std::regex_match(name, m, e87)) {
    SizedName s{"e87"};
    s.blocks = std::stoll(m[1].str()), s.topk = std::stoll(m[2].str());
    if (m[3].matched) s.nstate = std::stoll(m[3].str());
    else if (s.blocks == 4 || s.blocks == 6) s.nstate = 32;  // the level names' n_state (spec 2.21)
    else if (s.blocks == 8) s.nstate = 24;
    else if (s.blocks == 16 || s.blocks == 32) s.nstate = 16;
    return s;
  }
  return std::nullopt;
}

std::string model_names() {
  std::string s;
  for (const auto& m : all_models()) s += (s.empty() ? "" : ", ") + m.name;
  return s;
}

int64_t count_params(ModelConfig cfg) {
  cfg.build = torch::TensorOptions().dtype(torch::kFloat).device(torch::kMeta);
  try {
    return LM(cfg)->num_params();
  } catch (const c10::Error& e) {
    throw std::invalid_argument(e.what_without_backtrace());
  }
}

int64_t dim_for_params(ModelConfig cfg, int64_t target) {
  int64_t best_dim = 0, best_count = 0;
  for (int64_t dim = 128; dim <= 8192; dim += 128) {
    cfg.dim = dim;
    int64_t n = 0;
    try {
      n = count_params(cfg);
    } catch (const std::invalid_argument&) {
      continue;  // this width is not valid for the model (e.g. heads do not divide it)
    }
    if (best_dim == 0 || std::llabs(n - target) < std::llabs(best_count - target)) best_dim = dim, best_count = n;
    if (n > 2 * target) break;
  }
  if (best_dim == 0 || std::llabs(best_count - target) > target / 4)
    throw std::invalid_argument("no width for model '" + cfg.name + "' at depth " + std::to_string(cfg.depth) +
                                " comes within 25% of " + std::to_string(target) +
                                " parameters (closest: " + std::to_string(best_count) +
                                "); change --params or --depth");
  return best_dim;
}

}  // namespace elman::models
