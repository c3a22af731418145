#include "backends/observer.h"

#include <algorithm>
#include <cmath>

namespace vitq {

void AttentionSample::Record(const float* q, const float* k, const float* v, int64_t matrices,
                             int64_t tokens, int64_t d, const float* bias, int64_t bias_period) {
  std::lock_guard<std::mutex> lock(mu_);
  if (count_ == 0) {
    tokens_ = tokens;
    head_dim_ = d;
  }
  if (tokens != tokens_ || d != head_dim_) return;  // one geometry per layer
  const int64_t take = std::min(matrices, max_matrices_ - count_);
  const int64_t per = tokens * d, square = tokens * tokens;
  for (int64_t m = 0; m < take; ++m) {
    q_.insert(q_.end(), q + m * per, q + (m + 1) * per);
    k_.insert(k_.end(), k + m * per, k + (m + 1) * per);
    v_.insert(v_.end(), v + m * per, v + (m + 1) * per);
    if (bias) {
      const float* b = bias + (m % bias_period) * square;
      bias_.insert(bias_.end(), b, b + square);
    }
  }
  count_ += std::max<int64_t>(0, take);
}

void RangeObserver::Observe(const float* x, int64_t count) {
  if (count <= 0) return;
  float lo = x[0], hi = x[0];
  for (int64_t i = 1; i < count; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  std::lock_guard<std::mutex> lock(mu_);
  min_ = seen_ ? std::min(min_, lo) : lo;
  max_ = seen_ ? std::max(max_, hi) : hi;
  for (int64_t i = 0; i < count; ++i, ++seen_) {  // reservoir sampling (Algorithm R)
    if (sample_.size() < capacity_) {
      sample_.push_back(x[i]);
    } else {
      const uint64_t j = rng_() % static_cast<uint64_t>(seen_ + 1);
      if (j < capacity_) sample_[j] = x[i];
    }
  }
}

void RangeObserver::ObserveRows(const float* x, int64_t rows, int64_t row_len) {
  Observe(x, rows * row_len);
  std::lock_guard<std::mutex> lock(mu_);
  if (max_rows_ == 0) return;
  row_len_ = row_len;
  for (int64_t r = 0; r < rows; ++r, ++rows_seen_) {  // reservoir sampling of rows
    const float* row = x + r * row_len;
    if (static_cast<int64_t>(rows_.size()) < max_rows_ * row_len) {
      rows_.insert(rows_.end(), row, row + row_len);
    } else {
      const uint64_t j = rng_() % static_cast<uint64_t>(rows_seen_ + 1);
      if (static_cast<int64_t>(j) < max_rows_)
        std::copy(row, row + row_len, rows_.begin() + j * row_len);
    }
  }
}

void RangeObserver::KeepRows(int64_t max_rows) {
  std::lock_guard<std::mutex> lock(mu_);
  max_rows_ = max_rows;
}

std::vector<float> RangeObserver::rows() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rows_;
}

int64_t RangeObserver::row_len() const {
  std::lock_guard<std::mutex> lock(mu_);
  return row_len_;
}

float RangeObserver::min() const {
  std::lock_guard<std::mutex> lock(mu_);
  return min_;
}

float RangeObserver::max() const {
  std::lock_guard<std::mutex> lock(mu_);
  return max_;
}

int64_t RangeObserver::seen() const {
  std::lock_guard<std::mutex> lock(mu_);
  return seen_;
}

std::pair<float, float> RangeObserver::PercentileRange(double pct) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (sample_.empty()) return {0.0f, 0.0f};
  std::vector<float> s = sample_;
  const double tail = (100.0 - pct) / 200.0;  // each side
  const size_t lo_i = static_cast<size_t>(std::floor(tail * (s.size() - 1)));
  const size_t hi_i = static_cast<size_t>(std::ceil((1.0 - tail) * (s.size() - 1)));
  std::nth_element(s.begin(), s.begin() + lo_i, s.end());
  const float lo = s[lo_i];
  std::nth_element(s.begin(), s.begin() + hi_i, s.end());
  return {lo, s[hi_i]};
}

}  // namespace vitq
