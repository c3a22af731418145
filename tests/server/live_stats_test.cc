// The pieces behind Admin Stats, Feedback and shadow comparisons: the latency histogram's
// percentiles, the per-variant counters and throughput window, the feedback log's bounds, and
// the logit comparisons, each against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>

#include "server/feedback_log.h"
#include "server/output.h"
#include "server/variant_stats.h"

namespace vitq::server {
namespace {

TEST(LatencyHistogram, QuantilesAreWithinTheBucketWidth) {
  LatencyHistogram h;
  for (int64_t us = 1; us <= 100000; ++us) h.Record(us);  // uniform 1 µs .. 100 ms
  const auto counts = h.Snapshot();
  for (double q : {0.5, 0.9, 0.99}) {
    const double exact = q * 100000;
    EXPECT_NEAR(LatencyHistogram::Quantile(counts, q), exact, 0.026 * exact) << q;
  }
  EXPECT_EQ(
      LatencyHistogram::Quantile(LatencyHistogram::Counts(LatencyHistogram::kBuckets, 0), 0.5), 0);
}

TEST(LatencyHistogram, DifferenceIsWhatWasRecordedInBetween) {
  LatencyHistogram h;
  for (int i = 0; i < 100; ++i) h.Record(1000);
  const auto before = h.Snapshot();
  for (int i = 0; i < 10; ++i) h.Record(50000);
  const auto delta = LatencyHistogram::Difference(h.Snapshot(), before);
  int64_t total = 0;
  for (int64_t c : delta) total += c;
  EXPECT_EQ(total, 10);
  EXPECT_NEAR(LatencyHistogram::Quantile(delta, 0.5), 50000, 0.026 * 50000);
}

TEST(VariantStats, CountsAccuracyAgreementAndThroughput) {
  const int64_t t0 = 1000 * 1000000LL;
  VariantStats stats(t0);
  // 10 OK answers per second for 5 seconds, one error.
  for (int s = 0; s < 5; ++s)
    for (int i = 0; i < 10; ++i) stats.OnRequest(true, 2000, t0 + s * 1000000LL + i * 1000);
  stats.OnRequest(false, 0, t0);
  stats.OnLabeled(true);
  stats.OnLabeled(false);
  stats.OnLabeled(true);
  stats.OnShadowCompared(true, 1.0);
  stats.OnShadowCompared(false, 0.5);
  stats.OnShadowDropped();
  const VariantStatsSnapshot s = stats.Read(t0 + 5 * 1000000LL);
  EXPECT_EQ(s.requests, 50);
  EXPECT_EQ(s.errors, 1);
  EXPECT_NEAR(s.p50_ms, 2.0, 0.05);
  EXPECT_DOUBLE_EQ(s.throughput_rps, 10.0);  // 50 answers over the 5 complete seconds
  EXPECT_EQ(s.labeled, 3);
  EXPECT_EQ(s.labeled_correct, 2);
  EXPECT_EQ(s.shadow_compared, 2);
  EXPECT_EQ(s.shadow_agreed, 1);
  EXPECT_EQ(s.shadow_dropped, 1);
  EXPECT_DOUBLE_EQ(s.shadow_mean_cosine, 0.75);
  EXPECT_DOUBLE_EQ(stats.shadow_agreement(), 0.5);
  // Two minutes later the window holds nothing.
  EXPECT_EQ(stats.Read(t0 + 120 * 1000000LL).throughput_rps, 0);
}

TEST(FeedbackLog, TakesEachAnswerOnceAndForgetsOldOnes) {
  FeedbackLog log(/*capacity=*/3, /*max_age_us=*/1000);
  log.Remember("r1", {"m", "a", {}, {4}, 10}, 0);
  ASSERT_TRUE(log.Take("r1", 10).has_value());
  EXPECT_FALSE(log.Take("r1", 10).has_value()) << "labeled once";
  log.Remember("r2", {"m", "a", {}, {1}, 10}, 0);
  EXPECT_FALSE(log.Take("r2", 2000).has_value()) << "too old";
  for (const char* id : {"x1", "x2", "x3", "x4"}) log.Remember(id, {"m", "a", {}, {1}, 10}, 3000);
  EXPECT_EQ(log.size(), 3u);
  EXPECT_FALSE(log.Take("x1", 3000).has_value()) << "the oldest went first";
  EXPECT_TRUE(log.Take("x4", 3000).has_value());
  // An id stored again replaces the old answer and is not evicted with the old entry.
  log.Remember("x2", {"m", "b", {}, {7}, 10}, 3001);
  log.Remember("y1", {"m", "a", {}, {1}, 10}, 3002);
  log.Remember("y2", {"m", "a", {}, {1}, 10}, 3002);
  std::optional<AnsweredRequest> x2 = log.Take("x2", 3002);
  ASSERT_TRUE(x2.has_value());
  EXPECT_EQ(x2->variant_name, "b");
}

TEST(LogitComparisons, MatchHandComputedValues) {
  const float a[] = {1, 0, 0}, b[] = {0, 1, 0}, c[] = {2, 0, 0};
  EXPECT_DOUBLE_EQ(LogitCosine(a, b, 3), 0.0);
  EXPECT_DOUBLE_EQ(LogitCosine(a, c, 3), 1.0);
  const float p[] = {0, 0}, q[] = {std::log(3.0f), 0};  // softmax (0.5, 0.5) vs (0.75, 0.25)
  const double expected = 0.5 * std::log(0.5 / 0.75) + 0.5 * std::log(0.5 / 0.25);
  EXPECT_NEAR(SoftmaxKlDivergence(p, q, 2), expected, 1e-6);
  EXPECT_NEAR(SoftmaxKlDivergence(a, a, 3), 0.0, 1e-12);
  EXPECT_EQ(ArgMax(b, 3), 1);
}

}  // namespace
}  // namespace vitq::server
