// RangeObserver: records the range of a layer's inputs during calibration. A Linear whose
// QuantSpec carries an observer runs in fp32 and feeds every input batch to it.
#pragma once

#include <cstdint>
#include <mutex>
#include <random>
#include <utility>
#include <vector>

namespace vitq {

// Calibration sample of one attention layer for scale searches (liu2021): the first
// `max_matrices` per-head operands seen, each tokens × head_dim (q already × 1/√d), and for Swin
// the additive bias (relative position bias + shift mask) of each, tokens × tokens.
class AttentionSample {
 public:
  explicit AttentionSample(int64_t max_matrices = 32) : max_matrices_(max_matrices) {}
  // q, k, v: (matrices, tokens, d); bias: (bias_period, tokens, tokens) added to matrix m as
  // bias[m % bias_period], or null. Thread-safe; ignores what comes after the first matrices.
  void Record(const float* q, const float* k, const float* v, int64_t matrices, int64_t tokens,
              int64_t d, const float* bias, int64_t bias_period);

  int64_t count() const { return count_; }
  int64_t tokens() const { return tokens_; }
  int64_t head_dim() const { return head_dim_; }
  const std::vector<float>& q() const { return q_; }
  const std::vector<float>& k() const { return k_; }
  const std::vector<float>& v() const { return v_; }
  const std::vector<float>& bias() const { return bias_; }  // empty without bias

 private:
  std::mutex mu_;
  int64_t max_matrices_, count_ = 0, tokens_ = 0, head_dim_ = 0;
  std::vector<float> q_, k_, v_, bias_;
};

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
