// Byte data: split, reproducible windows, eval windows, files over 4 GiB, bad files.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "app/config.h"
#include "app/data.h"
#include "tests/support/catch.h"
#include "tests/support/run.h"

using namespace elman;

namespace {
std::string pattern_bytes(int64_t n) {
  std::string s(static_cast<size_t>(n), '\0');
  for (int64_t i = 0; i < n; ++i) s[static_cast<size_t>(i)] = static_cast<char>((i * 131 + i / 251) & 0xff);
  return s;
}
}  // namespace

TEST_CASE("the eval split is the file's tail and training windows stay out of it", "[data]") {
  const auto dir = test::scratch_dir("split");
  const std::string bytes = pattern_bytes(200000);
  test::write_file(dir + "/d.bin", bytes);
  app::ByteData data(dir + "/d.bin", 64, 1 << 20);
  CHECK(data.size() == 200000);
  CHECK(data.eval_size() == 20000);  // capped at a tenth of the file
  CHECK(data.train_size() == 180000);
  int64_t lo = data.train_size(), hi = 0;
  for (int64_t step = 0; step < 200; ++step)
    for (int64_t row = 0; row < 16; ++row) {
      const auto o = data.train_offset(7, step, row);
      REQUIRE(o >= 0);
      REQUIRE(o + 64 + 1 <= data.train_size());
      lo = std::min(lo, o), hi = std::max(hi, o);
    }
  CHECK(lo < data.train_size() / 20);  // offsets cover the split
  CHECK(hi > data.train_size() * 19 / 20);
  auto batch = data.train_batch(7, 3, 4);
  REQUIRE(batch.sizes() == torch::IntArrayRef({4, 65}));
  for (int64_t row = 0; row < 4; ++row) {
    const auto o = data.train_offset(7, 3, row);
    auto expected = torch::from_blob(const_cast<char*>(bytes.data()) + o, {65}, torch::kUInt8);
    CHECK(torch::equal(batch[row], expected));
  }
  const int64_t n = data.eval_windows();
  CHECK(n == (20000 - 1) / 64);
  auto last = data.eval_batch(n - 1, 1);
  const int64_t start = data.train_size() + (n - 1) * 64;
  CHECK(start + 65 <= data.size());
  CHECK(torch::equal(last[0], torch::from_blob(const_cast<char*>(bytes.data()) + start, {65}, torch::kUInt8)));
}

TEST_CASE("training windows are a pure function of seed and step and row", "[data]") {
  const auto dir = test::scratch_dir("det");
  test::write_file(dir + "/d.bin", pattern_bytes(100000));
  app::ByteData a(dir + "/d.bin", 32, 4096), b(dir + "/d.bin", 32, 4096);
  CHECK(torch::equal(a.train_batch(42, 10, 8), b.train_batch(42, 10, 8)));
  CHECK(!torch::equal(a.train_batch(42, 10, 8), a.train_batch(42, 11, 8)));
  CHECK(!torch::equal(a.train_batch(42, 10, 8), a.train_batch(43, 10, 8)));
}

TEST_CASE("files over 4 GiB are read past the 4 GiB mark", "[data]") {
  const auto dir = test::scratch_dir("big");
  const std::string path = dir + "/big.bin";
  const int64_t size = (int64_t(5) << 30) + 12345;  // sparse: takes no disk space
  const std::string tail = pattern_bytes(1 << 16);
  const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, size) == 0);
  REQUIRE(::pwrite(fd, tail.data(), tail.size(), size - static_cast<int64_t>(tail.size())) ==
          static_cast<ssize_t>(tail.size()));
  ::close(fd);
  app::ByteData data(path, 512, 1 << 16);
  CHECK(data.size() == size);
  CHECK(data.train_size() == size - (1 << 16));
  auto first = data.eval_batch(0, 1);  // starts at size - 64 KiB, beyond 4 GiB
  CHECK(torch::equal(first[0], torch::from_blob(const_cast<char*>(tail.data()), {513}, torch::kUInt8)));
  bool beyond = false;
  for (int64_t row = 0; row < 64 && !beyond; ++row) beyond = data.train_offset(1, 0, row) > (int64_t(1) << 32);
  CHECK(beyond);
  std::filesystem::remove(path);
}

TEST_CASE("missing or empty or too-small data files are clear errors", "[data]") {
  const auto dir = test::scratch_dir("bad");
  test::write_file(dir + "/empty.bin", "");
  test::write_file(dir + "/small.bin", std::string(1000, 'x'));
  auto expect = [](const std::string& path, int64_t chunk, const std::string& needle) {
    try {
      app::ByteData d(path, chunk, 1 << 20);
      FAIL("expected an error for " << path);
    } catch (const app::UsageError& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
  };
  expect(dir + "/nope.bin", 64, "cannot open data file");
  expect(dir + "/empty.bin", 64, "too small: 0 bytes");
  expect(dir + "/small.bin", 512, "smaller --chunk");
  app::ByteData ok(dir + "/small.bin", 64, 1 << 20);  // fits with a smaller chunk
  CHECK(ok.eval_size() == 100);  // a tenth of the file
}
