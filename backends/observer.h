// RangeObserver: records the range of a layer's inputs during calibration. A Linear whose
// QuantSpec carries an observer runs in fp32 and feeds every input batch to it.
#pragma once

#include <cstdint>
#include <mutex>
#include <random>
#include <utility>
#include <vector>

namespace vitq {

class RangeObserver {
 public:
  // Keeps min / max and a uniform reservoir sample of at most `sample_size` values.
  explicit RangeObserver(size_t sample_size = 1 << 18) : capacity_(sample_size) {}

  void Observe(const float* x, int64_t count);  // thread-safe
  // Same for `rows` rows of `row_len` values; with row sampling on (KeepRows) also keeps a
  // uniform reservoir sample of whole rows (a layer's inputs for scale searches).
  void ObserveRows(const float* x, int64_t rows, int64_t row_len);
  void KeepRows(int64_t max_rows);
  // The sampled rows, row-major, and their length (0 before any).
  std::vector<float> rows() const;
  int64_t row_len() const;

  float min() const;
  float max() const;
  int64_t seen() const;
  // [lo, hi] holding the central `pct` percent of the sampled values (e.g. 99.99).
  std::pair<float, float> PercentileRange(double pct) const;

 private:
  mutable std::mutex mu_;
  size_t capacity_;
  float min_ = 0, max_ = 0;
  int64_t seen_ = 0;
  std::vector<float> sample_;
  std::mt19937_64 rng_{12345};
  int64_t max_rows_ = 0, row_len_ = 0, rows_seen_ = 0;
  std::vector<float> rows_;
};

}  // namespace vitq
