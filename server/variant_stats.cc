#include "server/variant_stats.h"

#include <algorithm>
#include <cmath>

namespace vitq::server {
namespace {

constexpr double kFirstBucketUs = 10.0;
constexpr double kGrowth = 1.05;

}  // namespace

int LatencyHistogram::BucketOf(int64_t micros) {
  if (micros <= kFirstBucketUs) return 0;
  const int bucket = 1 + static_cast<int>(std::log(micros / kFirstBucketUs) / std::log(kGrowth));
  return std::min(bucket, kBuckets - 1);
}

void LatencyHistogram::Record(int64_t micros) {
  counts_[BucketOf(micros)].fetch_add(1, std::memory_order_relaxed);
}

LatencyHistogram::Counts LatencyHistogram::Snapshot() const {
  Counts out(kBuckets);
  for (int i = 0; i < kBuckets; ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

LatencyHistogram::Counts LatencyHistogram::Difference(const Counts& later, const Counts& earlier) {
  Counts out(later.size());
  for (size_t i = 0; i < later.size(); ++i) {
    out[i] = later[i] - (i < earlier.size() ? earlier[i] : 0);
  }
  return out;
}

double LatencyHistogram::Quantile(const Counts& counts, double q) {
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  if (total == 0) return 0;
  // The smallest bucket whose cumulative count reaches q of the total; its geometric middle.
  const double rank = std::max(1.0, std::ceil(q * static_cast<double>(total)));
  int64_t cumulative = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    if (cumulative >= rank) {
      if (i == 0) return kFirstBucketUs;
      const double lower = kFirstBucketUs * std::pow(kGrowth, static_cast<double>(i - 1));
      return lower * std::sqrt(kGrowth);
    }
  }
  return kFirstBucketUs * std::pow(kGrowth, static_cast<double>(counts.size() - 1));
}

VariantStats::VariantStats(int64_t now_us) : start_us_(now_us) { second_of_slot_.fill(-1); }

void VariantStats::OnRequest(bool ok, int64_t latency_us, int64_t now_us) {
  if (!ok) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  requests_.fetch_add(1, std::memory_order_relaxed);
  latency_.Record(latency_us);
  const int64_t second = now_us / 1000000;
  const size_t slot = static_cast<size_t>(second % kThroughputWindowS);
  absl::MutexLock lock(&mu_);
  if (second_of_slot_[slot] != second) {
    second_of_slot_[slot] = second;
    count_of_slot_[slot] = 0;
  }
  ++count_of_slot_[slot];
}

void VariantStats::OnLabeled(bool correct) {
  labeled_.fetch_add(1, std::memory_order_relaxed);
  if (correct) labeled_correct_.fetch_add(1, std::memory_order_relaxed);
}

void VariantStats::OnShadowCompared(bool agreed, double cosine) {
  {
    absl::MutexLock lock(&mu_);
    cosine_sum_ += cosine;
  }
  if (agreed) shadow_agreed_.fetch_add(1, std::memory_order_relaxed);
  shadow_compared_.fetch_add(1, std::memory_order_relaxed);
}

void VariantStats::OnShadowDropped() { shadow_dropped_.fetch_add(1, std::memory_order_relaxed); }

double VariantStats::shadow_agreement() const {
  const int64_t compared = shadow_compared_.load();
  return compared == 0 ? 0.0 : static_cast<double>(shadow_agreed_.load()) / compared;
}

VariantStatsSnapshot VariantStats::Read(int64_t now_us) const {
  VariantStatsSnapshot s;
  s.requests = requests_.load();
  s.errors = errors_.load();
  const LatencyHistogram::Counts counts = latency_.Snapshot();
  s.p50_ms = LatencyHistogram::Quantile(counts, 0.50) / 1000.0;
  s.p99_ms = LatencyHistogram::Quantile(counts, 0.99) / 1000.0;
  s.labeled = labeled_.load();
  s.labeled_correct = labeled_correct_.load();
  s.shadow_compared = shadow_compared_.load();
  s.shadow_agreed = shadow_agreed_.load();
  s.shadow_dropped = shadow_dropped_.load();
  s.uptime_s = static_cast<double>(now_us - start_us_) * 1e-6;
  const int64_t now_s = now_us / 1000000;
  absl::MutexLock lock(&mu_);
  if (s.shadow_compared > 0) s.shadow_mean_cosine = cosine_sum_ / s.shadow_compared;
  // The complete seconds the ring still holds (the current one is still filling up).
  constexpr int64_t kWindowS = kThroughputWindowS - 1;
  int64_t answered = 0;
  for (size_t i = 0; i < second_of_slot_.size(); ++i) {
    const int64_t age = now_s - second_of_slot_[i];
    if (second_of_slot_[i] >= 0 && age >= 1 && age <= kWindowS) answered += count_of_slot_[i];
  }
  const double window_s = std::min<double>(kWindowS, std::floor(s.uptime_s));
  s.throughput_rps = window_s >= 1 ? answered / window_s : 0;
  return s;
}

}  // namespace vitq::server
