// Configuration: durations, YAML defaults under flags, strict keys, model resolution and exact sizes.
#include <filesystem>
#include <utility>

#include "app/config.h"
#include "models/registry.h"
#include "tests/support/catch.h"
#include "tests/support/run.h"

using namespace elman;
using app::UsageError;

namespace {
app::Command parse(std::vector<std::string> args) {
  std::vector<const char*> argv{"elman-train"};
  for (auto& a : args) argv.push_back(a.c_str());
  return app::parse_command_line(static_cast<int>(argv.size()), argv.data());
}

// Parses args plus a CPU one-step budget and resolves them: {the resolved config, its model config}.
std::pair<app::Config, models::ModelConfig> resolve_on_cpu(std::vector<std::string> args) {
  args.insert(args.end(), {"--steps", "1", "--device", "cpu"});
  auto cmd = parse(args);
  auto m = app::resolve(cmd.config);
  return {cmd.config, m};
}

// Runs `f`, requires a UsageError whose one-line message contains `needle`.
template <typename F>
void require_usage_error(F&& f, const std::string& needle) {
  try {
    f();
    FAIL("expected a UsageError containing '" << needle << "'");
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find(needle) != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
  }
}
}  // namespace

TEST_CASE("durations and counts parse in the documented forms", "[config]") {
  CHECK(app::parse_duration("600") == 600);
  CHECK(app::parse_duration("600s") == 600);
  CHECK(app::parse_duration("10m") == 600);
  CHECK(app::parse_duration("1.5h") == 5400);
  require_usage_error([] { app::parse_duration("ten"); }, "invalid duration 'ten'");
  require_usage_error([] { app::parse_duration("-5m"); }, "invalid duration");
  CHECK(app::parse_count("100m") == 100000000);
  CHECK(app::parse_count("1.5b") == 1500000000);
  require_usage_error([] { app::parse_count("lots"); }, "invalid size 'lots'");
}

TEST_CASE("YAML gives defaults and flags override them", "[config]") {
  const auto dir = test::scratch_dir("yaml");
  test::write_file(dir + "/c.yaml", "model: llama\nlr: 0.001\ntime: 2m\nbatch: 8\n");
  auto cmd = parse({"--config", dir + "/c.yaml", "--lr", "0.002"});
  CHECK(cmd.config.model == "llama");
  CHECK(cmd.config.lr == 0.002);
  CHECK(cmd.config.time_s == 120);
  CHECK(cmd.config.batch == 8);
  CHECK(cmd.config.chunk == 512);
}

TEST_CASE("bad configuration gives a one-line error naming the fix", "[config]") {
  const auto dir = test::scratch_dir("badcfg");
  test::write_file(dir + "/unknown.yaml", "model: e61\nlearning_rate: 0.1\n");
  test::write_file(dir + "/broken.yaml", "model: [e61\nlr: 0.1\n");
  test::write_file(dir + "/list.yaml", "- model\n- e61\n");
  require_usage_error([&] { parse({"--config", dir + "/unknown.yaml"}); }, "unknown key 'learning_rate'");
  require_usage_error([&] { parse({"--config", dir + "/broken.yaml"}); }, "is not valid YAML");
  require_usage_error([&] { parse({"--config", dir + "/list.yaml"}); }, "must be a mapping");
  require_usage_error([&] { parse({"--config", dir + "/missing.yaml"}); }, "cannot read config file");
  require_usage_error([] { parse({"--learning-rate", "0.1"}); }, "learning-rate");
  require_usage_error([] { parse({"--dim", "wide"}); }, "invalid value 'wide' for --dim");
  require_usage_error([] { parse({"extra"}); }, "unexpected argument 'extra'");
}

TEST_CASE("model resolution rejects unknown models and unsupported sizes", "[config]") {
  auto resolve = [](std::vector<std::string> args) { return resolve_on_cpu(std::move(args)).second; };
  require_usage_error([&] { resolve({"--model", "e99"}); }, "valid models: e1, e42, e56, e61, e62, e63, e63m, e64, e65, e66, e67, e68, e70, e71, e72, e73, e74, e75, e87, gdn, llama, mamba2");
  require_usage_error([&] { resolve({"--model", "llama", "--dim", "100"}); }, "multiple of");
  require_usage_error([&] { resolve({"--model", "llama", "--expansion", "2"}); }, "does not take --expansion");
  require_usage_error([&] { resolve({"--model", "e61", "--nstate", "32"}); }, "does not take --nstate");
  for (const char* m : {"e70", "e71", "e72", "e73"}) {  // the matrix-state Elman cells take n_state 1..128
    INFO(m);
    require_usage_error([&] { resolve({"--model", m, "--nstate", "129"}); }, "n_state 129 is not supported; use --nstate from 1 to 128");
    CHECK(resolve({"--model", m, "--nstate", "128", "--dim", "128"}).nstate == 128);
  }
  require_usage_error([&] { resolve({"--model", "e61", "--params", "50g"}); }, "no width");
  require_usage_error([&] { resolve({"--model", "e61", "--params", "100m", "--dim", "640"}); }, "either --dim or --params");
  require_usage_error([&] { resolve({"--model", "e61", "--impl", "kernel"}); }, "--impl kernel");
  require_usage_error([&] { resolve({"--model", "e61", "--impl", "chunked"}); }, "--impl must be auto, kernel or reference");
  // mamba2 and gdn have our kernels (the default on CUDA) and their LibTorch chunked scans.
  for (const char* model : {"mamba2", "gdn"}) {
    INFO(model);
    require_usage_error([&] { resolve({"--model", model, "--impl", "kernel"}); }, "--impl kernel runs on CUDA only");
    require_usage_error([&] { resolve({"--model", model, "--impl", "fast"}); }, "--impl must be auto, kernel, chunked or reference");
    CHECK(resolve({"--model", model, "--impl", "chunked", "--dim", "128"}).impl == ops::Impl::Chunked);
    CHECK(resolve({"--model", model, "--dim", "128"}).impl == ops::Impl::Reference);  // auto on CPU
  }
  require_usage_error([&] { resolve({"--model", "llama", "--impl", "chunked"}); }, "--impl must be auto, kernel or reference");
  require_usage_error([&] { resolve({"--model", "e61", "--precision", "bf16"}); }, "needs --device cuda");
  require_usage_error([] {
    auto cmd = parse({"--model", "e61", "--device", "cpu"});
    app::resolve(cmd.config);
  }, "no budget");
}

TEST_CASE("exact parameter counts of the 100M configurations", "[config]") {
  models::ModelConfig e61 = models::find_model("e61").defaults;
  e61.name = "e61";
  CHECK(models::count_params(e61) == 98532480);  // spec section 4
  models::ModelConfig llama = models::find_model("llama").defaults;
  llama.name = "llama";
  // 256*640 + 20*(4*640^2 + 3*640*1792 + 2*640) + 640: the spec's 101,783,680 less its double norms.
  CHECK(models::count_params(llama) == 101770880);
  models::ModelConfig mamba2 = models::find_model("mamba2").defaults;
  mamba2.name = "mamba2";
  // Spec 2.22: 256*896 + 20*(896*(2*1792 + 2*128 + 28) + 2048*4 + 2048 + 3*28 + 1792 + 1792*896 + 2*896) + 2*896.
  CHECK(mamba2.dim == 896);
  CHECK(mamba2.depth == 20);
  CHECK(models::count_params(mamba2) == 101936528);
  models::ModelConfig gdn = models::find_model("gdn").defaults;
  gdn.name = "gdn";
  // Spec 2.22 FLA-GDN (H1): 256*768 + 20*(768*(2*768 + 2*1536 + 2*6) + 4*(2*768 + 1536) + 2*6 + 256 + 1536*768 + 768)
  // + 768, with 6 = 768 / 128 heads.
  CHECK(gdn.dim == 768);
  CHECK(gdn.depth == 20);
  CHECK(models::count_params(gdn) == 95020016);
  models::ModelConfig e63m = models::find_model("e63m").defaults;
  e63m.name = "e63m";
  CHECK(e63m.slots == 8);  // LadderLM's n_slots default, which the reported runs used
  CHECK(models::count_params(e63m) == 82610880);  // spec section 4
}

TEST_CASE("a 100m target picks the width from the exact count", "[config]") {
  for (const auto& [model, dim] : std::vector<std::pair<std::string, int64_t>>{{"e61", 640}, {"llama", 640}, {"mamba2", 896}, {"gdn", 768}}) {
    auto cmd = parse({"--model", model, "--params", "100m", "--steps", "1", "--device", "cpu"});
    app::resolve(cmd.config);
    INFO(model);
    CHECK(cmd.config.dim == dim);
    CHECK(cmd.config.depth == 20);
  }
  auto cmd = parse({"--model", "e61", "--params", "100m", "--depth", "10", "--steps", "1", "--device", "cpu"});
  app::resolve(cmd.config);
  CHECK(cmd.config.dim == 896);  // depth 10 needs a wider model for the same count
}

TEST_CASE("shipped configs load, resolve and have their asserted sizes", "[config]") {
  // Exact counts from spec section 4 (Llama: our single-norm block, see above).
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"bench-100m/E1.yaml", 114890880}, {"bench-100m/E42.yaml", 94615296}, {"bench-100m/E56.yaml", 114890880},
      {"bench-100m/E63.yaml", 84068864}, {"bench-100m/E63m.yaml", 82610880}, {"bench-100m/E66.yaml", 114916480},
      {"bench-100m/E61.yaml", 98532480}, {"bench-100m/E62.yaml", 98532480}, {"bench-100m/E64.yaml", 98532480},
      {"bench-100m/E65.yaml", 98558080}, {"bench-100m/E67.yaml", 98558080}, {"bench-100m/E68.yaml", 98583680},
      {"bench-100m/Llama.yaml", 101770880}, {"bench-100m/Mamba2.yaml", 101936528},
      // The matrix-state Elman cells, dim 1408 x depth 20, n_state 96 (spec section 4's exact counts).
      {"bench-100m/E70.yaml", 98612116}, {"bench-100m/E71.yaml", 104022656},
      {"bench-100m/E72.yaml", 104024576}, {"bench-100m/E73.yaml", 104020736},
      {"bench-100m/FLA-GDN.yaml", 95020016},
      // E74 full matrix and E75h4n32 from spec section 4; the E75 scan: the width closest to 100M by exact count.
      {"bench-100m/E74-full-n16.yaml", 98237952}, {"bench-100m/E74-full-n32.yaml", 101678592},
      {"bench-100m/E74-full-n48.yaml", 105119232}, {"bench-100m/E74-full-n64.yaml", 108559872},
      // The E74 diagonal seed variants (spec section 4 recounts; noz and full keep the reference's unused W_q, W_z).
      {"bench-100m/E74-d-tiedkvq-t.yaml", 103644672}, {"bench-100m/E74-s-tiedkvq-t.yaml", 103644672},
      {"bench-100m/E74-d-noz-t.yaml", 98612096}, {"bench-100m/E74-d-full-t.yaml", 104018816},
      {"bench-100m/E75h3n16.yaml", 94284736}, {"bench-100m/E75h3n20.yaml", 96742576},
      {"bench-100m/E75h3n24.yaml", 99200416}, {"bench-100m/E75h3n28.yaml", 101658256},
      {"bench-100m/E75h3n32.yaml", 104116096}, {"bench-100m/E75h4n16.yaml", 97561856},
      {"bench-100m/E75h4n20.yaml", 100838976}, {"bench-100m/E75h4n24.yaml", 104116096},
      {"bench-100m/E75h4n28.yaml", 95766080}, {"bench-100m/E75h4n32.yaml", 98838400},
      {"bench-100m/E75h5n16.yaml", 100838976}, {"bench-100m/E75h5n20.yaml", 104935376},
      {"bench-100m/E75h5n24.yaml", 97302240}, {"bench-100m/E75h5n28.yaml", 101142640},
      {"bench-100m/E75h5n32.yaml", 104983040}, {"bench-100m/E75h6n16.yaml", 104116096},
      {"bench-100m/E75h6n20.yaml", 97302240}, {"bench-100m/E75h6n24.yaml", 101910720},
      {"bench-100m/E75h6n28.yaml", 94830624}, {"bench-100m/E75h6n32.yaml", 99131904},
      // E87 sparse block memory: the width closest to 100M by exact count (spec 4's formula; at the seed's
      // widths the same formula gives its 52,770,176 / 49,305,600 / 63,022,976 / 74,092,800).
      {"bench-100m/E87b4k2.yaml", 102969856}, {"bench-100m/E87b8k3.yaml", 98532480},
      {"bench-100m/E87b16k4.yaml", 105599360}, {"bench-100m/E87b32k4.yaml", 96773632},
      {"bench-100m/E87b32k8.yaml", 96773632}};
  for (const auto& [file, params] : expected) {
    app::Config c;
    app::apply_yaml_file(c, std::string(ELMAN_SOURCE_DIR) + "/configs/" + file);
    c.device = "cpu";
    auto m = app::resolve(c);
    INFO(file);
    CHECK(models::count_params(m) == params);
    // The widths of E70-E73, the E75 scan (each heads x n_state) and E87 are what --params 100m picks.
    const bool e70_to_e75 = file.rfind("bench-100m/E7", 0) == 0 && file.rfind("bench-100m/E74", 0) != 0;
    if (e70_to_e75 || file.rfind("bench-100m/E87", 0) == 0)
      CHECK(models::dim_for_params(m, 100000000) == m.dim);
  }
}

TEST_CASE("the seed reports' sized names E75h<H>n<N> resolve to e75 with those sizes", "[config]") {
  auto sized = models::parse_sized_name("E75h4n32");
  REQUIRE(sized);
  CHECK(sized->model == "e75");
  CHECK(sized->heads == 4);
  CHECK(sized->nstate == 32);
  sized = models::parse_sized_name("e75h6");
  REQUIRE(sized);
  CHECK(sized->heads == 6);
  CHECK(sized->nstate == 0);
  for (const char* other : {"e75", "E75h", "E75h0n32", "E75h4n", "E75h4n32x", "E74h4", "llama"}) {
    INFO(other);
    CHECK(!models::parse_sized_name(other));
  }
  const auto resolve = resolve_on_cpu;
  auto [c, m] = resolve({"--model", "E75h4n32"});
  CHECK(c.model == "e75");
  CHECK(c.heads == 4);
  CHECK(c.nstate == 32);
  CHECK(models::count_params(m) == 98838400);  // the defaults are the spec's 100M E75h4n32
  auto [c3, m3] = resolve({"--model", "E75h3", "--nstate", "20", "--dim", "256"});
  CHECK(c3.heads == 3);
  CHECK(c3.nstate == 20);
  CHECK(m3.dim == 256);
  require_usage_error([&] { resolve({"--model", "E75h4n32", "--heads", "3"}); }, "--heads 3 contradicts model name 'E75h4n32'");
  require_usage_error([&] { resolve({"--model", "E75h0n32"}); }, "unknown model 'E75h0n32'");
  require_usage_error([&] { resolve({"--model", "E75h4n65"}); }, "n_state 65 is not supported");
  require_usage_error([&] { resolve({"--model", "e74", "--nstate", "100"}); }, "use --nstate from 1 to 64");
}

TEST_CASE("the seed reports' sized names 87b<B>k<K>(n<N>) resolve to e87 with those sizes", "[config]") {
  struct Case {
    const char* name;
    int64_t blocks, topk, nstate;
  };
  for (const auto& [name, blocks, topk, nstate] :
       {Case{"87b4k2", 4, 2, 32}, Case{"E87b6k3", 6, 3, 32}, Case{"e87b8k3", 8, 3, 24}, Case{"87b16k4", 16, 4, 16},
        Case{"E87b32k8", 32, 8, 16}, Case{"87b4k2n48", 4, 2, 48}, Case{"87b5k2", 5, 2, 0}}) {
    INFO(name);
    auto sized = models::parse_sized_name(name);
    REQUIRE(sized);
    CHECK(sized->model == "e87");
    CHECK(sized->blocks == blocks);
    CHECK(sized->topk == topk);
    CHECK(sized->nstate == nstate);
    CHECK(sized->heads == 0);
  }
  for (const char* other : {"e87", "87b16", "87b0k2", "87bk2", "87b16k4n", "E87b16k4x", "X87b16k4"}) {
    INFO(other);
    CHECK(!models::parse_sized_name(other));
  }
  const auto resolve = resolve_on_cpu;
  auto [c, m] = resolve({"--model", "E87b16k4"});
  CHECK(c.model == "e87");
  CHECK(c.blocks == 16);
  CHECK(c.topk == 4);
  CHECK(c.nstate == 16);
  CHECK(m.dim == 1920);  // the default width is the 100M one of E87b16k4
  CHECK(models::count_params(m) == 105599360);
  // The seed's widths reproduce spec section 4's counts.
  CHECK(models::count_params(resolve({"--model", "87b16k4", "--dim", "1408"}).second) == 63022976);
  CHECK(models::count_params(resolve({"--model", "87b32k8", "--dim", "1280"}).second) == 74092800);
  auto [c2, m2] = resolve({"--model", "e87", "--blocks", "32", "--topk", "16", "--nstate", "7", "--dim", "128"});
  CHECK(m2.blocks == 32);
  CHECK(m2.topk == 16);
  CHECK(m2.nstate == 7);
  require_usage_error([&] { resolve({"--model", "87b16k4", "--topk", "3"}); }, "--topk 3 contradicts model name '87b16k4'");
  require_usage_error([&] { resolve({"--model", "87b33k4"}); }, "--blocks 33 is not supported; use --blocks from 1 to 32");
  require_usage_error([&] { resolve({"--model", "87b8k9"}); },
                      "--topk 9 is not supported with 8 blocks; use --topk from 1 to the block count 8");
  require_usage_error([&] { resolve({"--model", "e87", "--blocks", "8", "--topk", "12"}); },
                      "e87: --topk 12 is not supported with 8 blocks");
  require_usage_error([&] { resolve({"--model", "87b4k2n65"}); }, "n_state 65 is not supported; use --nstate from 1 to 64");
  require_usage_error([&] { resolve({"--model", "e75", "--blocks", "4"}); }, "model 'e75' does not take --blocks");
  require_usage_error([&] { resolve({"--model", "e61", "--topk", "4"}); }, "model 'e61' does not take --topk");
}

TEST_CASE("e63m takes --slots (default 8) and refuses slot counts outside 1..16 and widths its kernel cannot hold", "[config]") {
  auto resolve = [](std::vector<std::string> args) {
    args.insert(args.end(), {"--dim", "128", "--depth", "2"});
    return resolve_on_cpu(args);
  };
  auto [c, m] = resolve({"--model", "e63m"});
  CHECK(c.slots == 8);
  CHECK(m.slots == 8);
  CHECK(m.expansion == 2.0);
  // Per layer D*dim + 2 D^2 + 2 N D + N^2 + 2 N + N*dim + dim (spec 4's E63m count), D = 256.
  auto count = [](int64_t dim, int64_t D, int64_t N, int64_t depth) {
    return 256 * dim + depth * (D * dim + 2 * D * D + 2 * N * D + N * N + 2 * N + N * dim + dim) + dim;
  };
  CHECK(models::count_params(m) == count(128, 256, 8, 2));
  auto [c3, m3] = resolve({"--model", "e63m", "--slots", "3"});
  CHECK(c3.slots == 3);
  CHECK(models::count_params(m3) == count(128, 256, 3, 2));
  CHECK(models::count_params(resolve({"--model", "e63m", "--slots", "16"}).second) == count(128, 256, 16, 2));
  require_usage_error([&] { resolve({"--model", "e63m", "--slots", "17"}); },
                      "17 slots are not supported; use --slots from 1 to 16");
  require_usage_error([&] { resolve({"--model", "e63m", "--slots", "-1"}); }, "must be positive");
  require_usage_error([&] { resolve({"--model", "e61", "--slots", "8"}); }, "model 'e61' does not take --slots");
  require_usage_error([&] { resolve({"--model", "e63m", "--nstate", "8"}); }, "model 'e63m' does not take --nstate");
  // The CUDA kernel holds the state and its gradient in one block's registers: 16 slots up to D = 1280.
  models::ModelConfig wide = models::find_model("e63m").defaults;
  wide.name = "e63m", wide.dim = 768, wide.slots = 16, wide.impl = ops::Impl::Kernel;
  try {
    models::count_params(wide);
    FAIL("expected an error for D = 1536 with 16 slots");
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("D = dim * expansion = 1536 is too wide for the CUDA kernel with 16 slots (at most 1280)") !=
          std::string::npos);
  }
  wide.slots = 8;
  CHECK(models::count_params(wide) == count(768, 1536, 8, 20));
}

TEST_CASE("e74 cell options: defaults, diagonal variants, and clear errors for what is not supported", "[config]") {
  auto resolve = [](std::vector<std::string> args) {
    args.insert(args.end(), {"--dim", "128", "--depth", "2"});
    return resolve_on_cpu(args);
  };
  auto [c, m] = resolve({"--model", "e74"});  // the full-matrix configuration that ran (spec 2.18)
  CHECK(c.state == "full");
  CHECK(c.update == "delta");
  CHECK(c.projection == "noz");
  CHECK(c.nonlinearity == "tanh");
  // Diagonal: any n_state (no matrix in registers), every projection set; W_q and W_z add n x D each.
  const int64_t D = 256, n = 100;
  auto count = [&](const char* update, const char* projection, const char* nonlinearity) {
    auto [cd, md] = resolve({"--model", "e74", "--state", "diagonal", "--nstate", "100", "--update", update,
                             "--projection", projection, "--nonlinearity", nonlinearity});
    CHECK(cd.state == "diagonal");
    return models::count_params(md);
  };
  const int64_t tied = count("delta", "tiedkvq", "tanh");
  CHECK(count("simple", "tiedkvq", "tanh") == tied);
  CHECK(count("simple", "tiedkvq", "linear") == tied);
  CHECK(count("delta", "noz", "tanh") == tied + 2 * 2 * n * D);  // depth 2 layers x (W_kv - W_k + W_q)
  CHECK(count("delta", "full", "tanh") == tied + 2 * 3 * n * D);
  require_usage_error([&] { resolve({"--model", "e74", "--state", "diagonal", "--nonlinearity", "linear"}); },
                      "--update delta --nonlinearity linear is refused: k is not normalised, so |1 - k^2| > 1");
  require_usage_error([&] { resolve({"--model", "e74", "--state", "diagonal", "--nonlinearity", "linear"}); },
                      "use --nonlinearity tanh or --update simple");
  for (const char* bad : {"--update=simple", "--projection=tiedkvq", "--projection=full", "--nonlinearity=linear"}) {
    INFO(bad);
    require_usage_error([&] { resolve({"--model", "e74", bad}); },
                        "--state full runs the full-matrix kernel, which supports only --update delta --projection noz");
  }
  require_usage_error([&] { resolve({"--model", "e74", "--state", "diag"}); }, "invalid --state 'diag' (valid: full, diagonal)");
  require_usage_error([&] { resolve({"--model", "e74", "--state", "diagonal", "--projection", "qkv"}); },
                      "invalid --projection 'qkv' (valid: tiedkvq, noz, full)");
  for (const char* key : {"--state", "--update", "--projection", "--nonlinearity"}) {
    INFO(key);
    require_usage_error([&] { resolve({"--model", "e61", key, "x"}); }, std::string("model 'e61' does not take ") + key);
  }
}

TEST_CASE("the key option of the matrix-state Elman cells: l2 where the raw key diverges, raw elsewhere, errors", "[config]") {
  auto resolve = [](std::vector<std::string> args) {
    args.insert(args.end(), {"--dim", "64", "--depth", "2"});
    return resolve_on_cpu(args);
  };
  for (const char* model : {"e63m", "e71", "e72"}) {
    INFO(model);
    CHECK(resolve({"--model", model}).first.key == "l2");
    CHECK(resolve({"--model", model, "--key", "raw"}).second.key == "raw");
  }
  for (const char* model : {"e70", "e73"}) {
    INFO(model);
    CHECK(resolve({"--model", model}).first.key == "raw");
    CHECK(resolve({"--model", model, "--key", "l2"}).second.key == "l2");
  }
  CHECK(resolve({"--model", "e61"}).first.key.empty());
  require_usage_error([&] { resolve({"--model", "e71", "--key", "unit"}); }, "e71: invalid --key 'unit' (valid: l2, raw)");
  require_usage_error([&] { resolve({"--model", "e75", "--key", "l2"}); }, "model 'e75' does not take --key");
}

TEST_CASE("the saved config reloads to the same resolved config", "[config]") {
  const auto dir = test::scratch_dir("reload");
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--model", "llama", "--params", "100m", "--time", "90s", "--device", "cpu"},
           {"--model", "e63m", "--slots", "5", "--dim", "128", "--steps", "5", "--device", "cpu"},
           {"--model", "e74", "--state", "diagonal", "--update", "simple", "--projection", "full", "--nstate", "96",
            "--steps", "5", "--device", "cpu"}}) {
    auto cmd = parse(args);
    app::resolve(cmd.config);
    test::write_file(dir + "/config.yaml", app::config_yaml(cmd.config));
    app::Config again;
    app::apply_yaml_file(again, dir + "/config.yaml");
    app::resolve(again);
    INFO(args[1]);
    CHECK(app::config_yaml(again) == app::config_yaml(cmd.config));
  }
}

TEST_CASE("the executable reports bad input in one line with exit status 2", "[config][cli]") {
  const auto dir = test::scratch_dir("cli");
  test::write_file(dir + "/empty.bin", "");
  test::write_file(dir + "/tiny.bin", std::string(300, 'a'));
  test::write_file(dir + "/bad.yaml", "model: e61\n  lr: [\n");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--data", dir + "/missing.bin"}, "cannot open data file"},
      {{"--data", dir + "/empty.bin"}, "too small: 0 bytes"},
      {{"--data", dir + "/tiny.bin"}, "too small: 300 bytes"},
      {{"--config", dir + "/bad.yaml"}, "not valid YAML"},
      {{"--model", "nope"}, "unknown model 'nope'"},
      {{"--model", "llama", "--dim", "96", "--heads", "5"}, "multiple of the head count"},
  };
  for (const auto& [args, needle] : cases) {
    auto a = args;
    a.insert(a.end(), {"--steps", "2", "--device", "cpu", "--out", dir + "/runs"});
    const auto r = test::run_train_exe(a);
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(r.output.find(needle) != std::string::npos);
    CHECK(r.output.rfind("elman-train: error: ", 0) == 0);
    CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
  }
}
