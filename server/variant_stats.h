// Live figures of one served variant, for the Admin Stats RPC (A/B reports) and the load-adaptive
// controller: request counts, a latency histogram, throughput over the last minute, labeled
// accuracy and agreement with the model's reference variant. Every method is thread-safe; the
// request path only touches atomics and, once per request, a short mutex.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace vitq::server {

// Latencies in buckets 5% wide, from 10 µs up (about 100 s in the last bucket): percentiles read
// from it are within 2.5% of the exact value.
class LatencyHistogram {
 public:
  static constexpr int kBuckets = 340;
  using Counts = std::vector<int64_t>;

  void Record(int64_t micros);
  Counts Snapshot() const;
  // The q-quantile (q in [0, 1]) in microseconds of `counts` (a snapshot, or the difference of
  // two); 0 when empty.
  static double Quantile(const Counts& counts, double q);
  // `later` minus `earlier`, bucket by bucket: the requests recorded between two snapshots.
  static Counts Difference(const Counts& later, const Counts& earlier);

 private:
  static int BucketOf(int64_t micros);
  std::array<std::atomic<int64_t>, kBuckets> counts_{};
};

struct VariantStatsSnapshot {
  int64_t requests = 0;  // answered OK
  int64_t errors = 0;
  double p50_ms = 0, p99_ms = 0;
  double throughput_rps = 0;  // OK answers per second over the last 59 complete seconds
  int64_t labeled = 0, labeled_correct = 0;
  int64_t shadow_compared = 0, shadow_agreed = 0, shadow_dropped = 0;
  double shadow_mean_cosine = 0;
  double uptime_s = 0;
};

class VariantStats {
 public:
  // `now_us`: any steady clock in microseconds (tests pass their own).
  explicit VariantStats(int64_t now_us);

  void OnRequest(bool ok, int64_t latency_us, int64_t now_us);
  void OnLabeled(bool correct);
  void OnShadowCompared(bool agreed, double cosine);
  void OnShadowDropped();

  VariantStatsSnapshot Read(int64_t now_us) const;
  const LatencyHistogram& latency() const { return latency_; }
  // Agreement with the reference so far and the number of images it rests on.
  int64_t shadow_compared() const { return shadow_compared_.load(); }
  double shadow_agreement() const;

 private:
  static constexpr int kThroughputWindowS = 60;
  const int64_t start_us_;
  LatencyHistogram latency_;
  std::atomic<int64_t> requests_{0}, errors_{0};
  std::atomic<int64_t> labeled_{0}, labeled_correct_{0};
  std::atomic<int64_t> shadow_compared_{0}, shadow_agreed_{0}, shadow_dropped_{0};
  mutable absl::Mutex mu_;
  double cosine_sum_ ABSL_GUARDED_BY(mu_) = 0;
  // OK answers per second of the last minute: slot s % 60 counts second s.
  std::array<int64_t, kThroughputWindowS> second_of_slot_ ABSL_GUARDED_BY(mu_){};
  std::array<int64_t, kThroughputWindowS> count_of_slot_ ABSL_GUARDED_BY(mu_){};
};

}  // namespace vitq::server
