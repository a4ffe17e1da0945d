// Configuration: durations, YAML defaults under flags, strict keys, model resolution and exact sizes.
#include <filesystem>

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
  auto resolve = [](std::vector<std::string> args) {
    args.insert(args.end(), {"--steps", "1", "--device", "cpu"});
    auto cmd = parse(args);
    return app::resolve(cmd.config);
  };
  require_usage_error([&] { resolve({"--model", "e99"}); }, "valid models: e1, e42, e56, e61, e62, e63, e64, e65, e66, e67, e68, e74, e75, llama, mamba2");
  require_usage_error([&] { resolve({"--model", "llama", "--dim", "100"}); }, "multiple of");
  require_usage_error([&] { resolve({"--model", "llama", "--expansion", "2"}); }, "does not take --expansion");
  require_usage_error([&] { resolve({"--model", "e61", "--nstate", "32"}); }, "does not take --nstate");
  require_usage_error([&] { resolve({"--model", "e61", "--params", "50g"}); }, "no width");
  require_usage_error([&] { resolve({"--model", "e61", "--params", "100m", "--dim", "640"}); }, "either --dim or --params");
  require_usage_error([&] { resolve({"--model", "e61", "--impl", "kernel"}); }, "--impl kernel");
  require_usage_error([&] { resolve({"--model", "e61", "--impl", "chunked"}); }, "--impl must be auto, kernel or reference");
  require_usage_error([&] { resolve({"--model", "mamba2", "--impl", "kernel"}); }, "has no CUDA kernel yet; choose --impl chunked");
  require_usage_error([&] { resolve({"--model", "llama", "--impl", "chunked"}); }, "has no kernel choice");
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
}

TEST_CASE("a 100m target picks the width from the exact count", "[config]") {
  for (const auto& [model, dim] : std::vector<std::pair<std::string, int64_t>>{{"e61", 640}, {"llama", 640}, {"mamba2", 896}}) {
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
      {"bench-100m/E63.yaml", 84068864}, {"bench-100m/E66.yaml", 114916480},
      {"bench-100m/E61.yaml", 98532480}, {"bench-100m/E62.yaml", 98532480}, {"bench-100m/E64.yaml", 98532480},
      {"bench-100m/E65.yaml", 98558080}, {"bench-100m/E67.yaml", 98558080}, {"bench-100m/E68.yaml", 98583680},
      {"bench-100m/Llama.yaml", 101770880}, {"bench-100m/Mamba2.yaml", 101936528},
      // E74 full matrix and E75h4n32 from spec section 4; the E75 scan: the width closest to 100M by exact count.
      {"bench-100m/E74-full-n16.yaml", 98237952}, {"bench-100m/E74-full-n32.yaml", 101678592},
      {"bench-100m/E74-full-n48.yaml", 105119232}, {"bench-100m/E74-full-n64.yaml", 108559872},
      {"bench-100m/E75h3n16.yaml", 94284736}, {"bench-100m/E75h3n20.yaml", 96742576},
      {"bench-100m/E75h3n24.yaml", 99200416}, {"bench-100m/E75h3n28.yaml", 101658256},
      {"bench-100m/E75h3n32.yaml", 104116096}, {"bench-100m/E75h4n16.yaml", 97561856},
      {"bench-100m/E75h4n20.yaml", 100838976}, {"bench-100m/E75h4n24.yaml", 104116096},
      {"bench-100m/E75h4n28.yaml", 95766080}, {"bench-100m/E75h4n32.yaml", 98838400},
      {"bench-100m/E75h5n16.yaml", 100838976}, {"bench-100m/E75h5n20.yaml", 104935376},
      {"bench-100m/E75h5n24.yaml", 97302240}, {"bench-100m/E75h5n28.yaml", 101142640},
      {"bench-100m/E75h5n32.yaml", 104983040}, {"bench-100m/E75h6n16.yaml", 104116096},
      {"bench-100m/E75h6n20.yaml", 97302240}, {"bench-100m/E75h6n24.yaml", 101910720},
      {"bench-100m/E75h6n28.yaml", 94830624}, {"bench-100m/E75h6n32.yaml", 99131904}};
  for (const auto& [file, params] : expected) {
    app::Config c;
    app::apply_yaml_file(c, std::string(ELMAN_SOURCE_DIR) + "/configs/" + file);
    c.device = "cpu";
    auto m = app::resolve(c);
    INFO(file);
    CHECK(models::count_params(m) == params);
    // The E75 scan's widths are what --params 100m picks for each heads x n_state.
    if (file.rfind("bench-100m/E75h", 0) == 0) CHECK(models::dim_for_params(m, 100000000) == m.dim);
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
  auto resolve = [](std::vector<std::string> args) {
    args.insert(args.end(), {"--steps", "1", "--device", "cpu"});
    auto cmd = parse(args);
    auto m = app::resolve(cmd.config);
    return std::make_pair(cmd.config, m);
  };
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

TEST_CASE("the saved config reloads to the same resolved config", "[config]") {
  auto cmd = parse({"--model", "llama", "--params", "100m", "--time", "90s", "--device", "cpu"});
  app::resolve(cmd.config);
  const auto dir = test::scratch_dir("reload");
  test::write_file(dir + "/config.yaml", app::config_yaml(cmd.config));
  app::Config again;
  app::apply_yaml_file(again, dir + "/config.yaml");
  app::resolve(again);
  CHECK(app::config_yaml(again) == app::config_yaml(cmd.config));
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
