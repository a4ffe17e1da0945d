// Byte data: a memory-mapped file of raw bytes (vocab 256), split into a training head and a fixed
// held-out eval tail. Training windows of chunk+1 bytes start at offsets that are a pure function of
// (seed, step, row), so a resumed run draws exactly the windows it would have drawn.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace elman::app {

class ByteData {
 public:
  // Maps `path`; the last `eval_bytes` bytes (capped at a tenth of the file) are the eval split.
  // Throws UsageError when the file is missing, unreadable or too small for `chunk`.
  ByteData(const std::string& path, int64_t chunk, int64_t eval_bytes);
  ~ByteData();
  ByteData(const ByteData&) = delete;
  ByteData& operator=(const ByteData&) = delete;

  int64_t size() const { return size_; }
  int64_t train_size() const { return train_size_; }
  int64_t eval_size() const { return size_ - train_size_; }

  // Offset of row `row` of step `step`'s batch: uniform in [0, train_size - chunk - 1].
  int64_t train_offset(uint64_t seed, int64_t step, int64_t row) const;
  // uint8 [batch, chunk+1]: rows first_row .. first_row+batch-1 of step `step`'s windows. Data-parallel rank r
  // of a job with per-rank batch B takes first_row = r*B, so N ranks read what one process with N*B reads.
  torch::Tensor train_batch(uint64_t seed, int64_t step, int64_t batch, int64_t first_row = 0) const;
  // Number of non-overlapping eval windows (stride chunk, chunk+1 bytes each) and a batch of them.
  int64_t eval_windows() const;
  torch::Tensor eval_batch(int64_t first, int64_t count) const;

 private:
  const uint8_t* bytes_ = nullptr;
  int64_t size_ = 0, train_size_ = 0, chunk_ = 0;
};

}  // namespace elman::app
