#include "app/data.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "app/config.h"

namespace elman::app {
namespace {
// splitmix64: a well-mixed counter-based generator.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
}  // namespace

ByteData::ByteData(const std::string& path, int64_t chunk, int64_t eval_bytes) : chunk_(chunk) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0)
    throw UsageError("cannot open data file '" + path + "': " + std::strerror(errno) +
                     " (make the default corpus with scripts/prepare_corpus.sh, or pass --data)");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw UsageError("data file '" + path + "' is not a regular file");
  }
  size_ = st.st_size;
  const int64_t eval = eval_bytes > 0 ? std::max(std::min(eval_bytes, size_ / 10), chunk + 1) : 0;
  const int64_t need = (chunk + 1) * 2 + eval;
  if (size_ < need) {
    ::close(fd);
    throw UsageError("data file '" + path + "' is too small: " + std::to_string(size_) + " bytes, need at least " +
                     std::to_string(need) + " for --chunk " + std::to_string(chunk) +
                     (eval ? " with an eval split" : "") + " (use a larger file or a smaller --chunk)");
  }
  train_size_ = size_ - eval;
  void* p = ::mmap(nullptr, static_cast<size_t>(size_), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw UsageError("cannot memory-map data file '" + path + "': " + std::strerror(errno));
  ::madvise(p, static_cast<size_t>(size_), MADV_RANDOM);
  bytes_ = static_cast<const uint8_t*>(p);
}

ByteData::~ByteData() {
  if (bytes_) ::munmap(const_cast<uint8_t*>(bytes_), static_cast<size_t>(size_));
}

int64_t ByteData::train_offset(uint64_t seed, int64_t step, int64_t row) const {
  const uint64_t range = static_cast<uint64_t>(train_size_ - chunk_);  // offsets 0 .. train_size-chunk-1
  const uint64_t r = mix(mix(mix(seed) ^ static_cast<uint64_t>(step)) ^ static_cast<uint64_t>(row));
  return static_cast<int64_t>(r % range);
}

torch::Tensor ByteData::train_batch(uint64_t seed, int64_t step, int64_t batch, int64_t first_row) const {
  auto out = torch::empty({batch, chunk_ + 1}, torch::kUInt8);
  auto* dst = out.data_ptr<uint8_t>();
  for (int64_t i = 0; i < batch; ++i)
    std::memcpy(dst + i * (chunk_ + 1), bytes_ + train_offset(seed, step, first_row + i), static_cast<size_t>(chunk_ + 1));
  return out;
}

int64_t ByteData::eval_windows() const { return eval_size() > chunk_ ? (eval_size() - 1) / chunk_ : 0; }

torch::Tensor ByteData::eval_batch(int64_t first, int64_t count) const {
  auto out = torch::empty({count, chunk_ + 1}, torch::kUInt8);
  auto* dst = out.data_ptr<uint8_t>();
  for (int64_t i = 0; i < count; ++i)
    std::memcpy(dst + i * (chunk_ + 1), bytes_ + train_size_ + (first + i) * chunk_, static_cast<size_t>(chunk_ + 1));
  return out;
}

}  // namespace elman::app
