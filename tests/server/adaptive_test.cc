// The load-adaptive controller as a state machine, stepped with synthetic observations — and on a
// simulated service whose latency follows its load, through a load step and back.
#include "server/adaptive.h"

#include <gtest/gtest.h>

#include <cmath>

#include "server/repository_config.h"

namespace vitq::server {
namespace {

AdaptivePolicy Ladder() {
  AdaptivePolicy p;
  p.variants = {"fp32", "w8a8", "w4a4"};
  p.p99_slo_ms = 50;
  p.agreement_floor = 0.98;
  p.min_comparisons = 100;
  p.step_down_at = 0.8;   // 40 ms
  p.step_up_below = 0.4;  // 20 ms
  p.calm_intervals = 3;
  return p;
}

AdaptiveObservation Observed(double p99_ms, std::vector<double> agreement = {1.0, 0.995, 0.985},
                             std::vector<int64_t> comparisons = {0, 500, 500},
                             int64_t requests = 1000) {
  return {p99_ms, requests, std::move(agreement), std::move(comparisons)};
}

TEST(AdaptivePolicy, RejectsSettingsOutOfRange) {
  EXPECT_TRUE(ValidateAdaptivePolicy(Ladder()).ok());
  AdaptivePolicy p = Ladder();
  p.variants = {"fp32"};
  EXPECT_FALSE(ValidateAdaptivePolicy(p).ok());
  p = Ladder();
  p.p99_slo_ms = 0;
  EXPECT_FALSE(ValidateAdaptivePolicy(p).ok());
  p = Ladder();
  p.step_up_below = 0.9;  // above step_down_at: would flap
  EXPECT_FALSE(ValidateAdaptivePolicy(p).ok());
  p = Ladder();
  p.agreement_floor = 1.5;
  EXPECT_FALSE(ValidateAdaptivePolicy(p).ok());
}

TEST(AdaptivePolicy, ConfigNeedsAShadowReferenceAndKnownVariants) {
  const std::string base =
      "models:\n  - name: m\n    variants: [{name: fp32, path: a}, {name: w8a8, path: b, weight: "
      "0}]\n";
  EXPECT_FALSE(
      ParseServerConfig(base + "    adaptive: {variants: [fp32, w8a8], p99_slo_ms: 50}\n", "/")
          .ok());
  EXPECT_FALSE(ParseServerConfig(base + "    shadow: {variant: fp32, fraction: 0.1}\n"
                                        "    adaptive: {variants: [fp32, w2a2], p99_slo_ms: 50}\n",
                                 "/")
                   .ok());
  absl::StatusOr<ServerConfig> ok = ParseServerConfig(
      base +
          "    shadow: {variant: fp32, fraction: 0.1}\n"
          "    adaptive: {variants: [fp32, w8a8], p99_slo_ms: 50, agreement_floor: 0.97}\n",
      "/");
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_TRUE(ok->models[0].adaptive.has_value());
  EXPECT_EQ(ok->models[0].adaptive->agreement_floor, 0.97);
}

TEST(AdaptiveController, StepsDownPastTheThresholdOneRungAtATime) {
  AdaptiveController c(Ladder());
  EXPECT_FALSE(c.Step(Observed(30)).changed);  // inside the band
  AdaptiveDecision d = c.Step(Observed(45));
  EXPECT_TRUE(d.changed);
  EXPECT_EQ(d.rung, 1);
  EXPECT_NE(d.reason.find("fp32 -> w8a8"), std::string::npos) << d.reason;
  EXPECT_FALSE(c.Step(Observed(90)).changed) << "holds one interval after a move";
  EXPECT_EQ(c.Step(Observed(90)).rung, 2);
}

TEST(AdaptiveController, NeverRoutesToAVariantBelowTheFloorOrNotYetMeasured) {
  AdaptiveController c(Ladder());
  // w8a8 below the floor, w4a4 not measured enough: nowhere to go.
  AdaptiveDecision d = c.Step(Observed(200, {1.0, 0.95, 0.99}, {0, 500, 10}));
  EXPECT_FALSE(d.changed);
  EXPECT_EQ(d.rung, 0);
  // w8a8 below the floor but w4a4 fine: skips to w4a4.
  d = c.Step(Observed(200, {1.0, 0.95, 0.99}, {0, 500, 500}));
  EXPECT_EQ(d.rung, 2);
}

TEST(AdaptiveController, LeavesAVariantWhoseAgreementFalls) {
  AdaptiveController c(Ladder());
  ASSERT_EQ(c.Step(Observed(45)).rung, 1);
  AdaptiveDecision d = c.Step(Observed(45, {1.0, 0.90, 0.99}));
  EXPECT_TRUE(d.changed);
  EXPECT_EQ(d.rung, 0);
  EXPECT_NE(d.reason.find("below the agreement floor"), std::string::npos);
}

TEST(AdaptiveController, StepsUpOnlyAfterCalmIntervalsAndDoesNotFlap) {
  AdaptiveController c(Ladder());
  ASSERT_EQ(c.Step(Observed(45)).rung, 1);  // fp32 failed at 1000 requests per interval
  c.Step(Observed(10));                     // hold after the move
  // Latency inside the band (between 20 and 40 ms) never moves it, however long.
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(c.Step(Observed(i % 2 ? 25 : 38)).changed);
  // Calm, but at the load fp32 failed at: climbing back would overload it again.
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(c.Step(Observed(10)).changed);
  EXPECT_FALSE(c.Step(Observed(30)).changed);  // in the band: the calm streak starts over
  // Calm at half that load; an interrupted calm streak starts counting again.
  auto calm = [] { return Observed(10, {1.0, 0.995, 0.985}, {0, 500, 500}, 500); };
  EXPECT_FALSE(c.Step(calm()).changed);
  EXPECT_FALSE(c.Step(calm()).changed);
  EXPECT_FALSE(c.Step(Observed(30, {1.0, 0.995, 0.985}, {0, 500, 500}, 500)).changed);
  EXPECT_FALSE(c.Step(calm()).changed);
  EXPECT_FALSE(c.Step(calm()).changed);
  AdaptiveDecision d = c.Step(calm());
  EXPECT_TRUE(d.changed);
  EXPECT_EQ(d.rung, 0);
}

// The interval in which a variant fails may be a partial one (the load step came mid-interval),
// so the load it could not carry is the highest seen while traffic stays on the faster variant.
TEST(AdaptiveController, ClimbsBackOnceTheLoadIsWellBelowWhatFailed) {
  AdaptiveController c(Ladder());
  auto observed = [](double p99, int64_t requests) {
    return Observed(p99, {1.0, 0.995, 0.985}, {0, 500, 500}, requests);
  };
  ASSERT_EQ(c.Step(observed(500, 40)).rung, 1);  // fp32 failed; only 40 answers in that interval
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(c.Step(observed(30, 86)).changed);  // high load on w8a8
  // Calm at 70 answers per interval: 70 >= 0.8 x 86, fp32 would be overloaded again.
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(c.Step(observed(10, 70)).changed);
  EXPECT_FALSE(c.Step(observed(30, 70)).changed);  // in the band: the calm streak starts over
  // At 36 it goes back after the calm streak.
  EXPECT_FALSE(c.Step(observed(10, 36)).changed);
  EXPECT_FALSE(c.Step(observed(10, 36)).changed);
  EXPECT_EQ(c.Step(observed(10, 36)).rung, 0);
}

// A simulated server: each variant serves `capacity` requests/s; the p99 of an interval follows
// an M/M/1 queue, p99 = ln(100) / (capacity - load) (seconds), unbounded at overload. The load
// steps from 150 to 450 requests/s for 30 intervals of 5 s and back: fp32 (400/s) cannot hold
// the step, w8a8 (520/s) not within the SLO, w4a4 (800/s) can.
TEST(AdaptiveController, HoldsTheSloThroughALoadStepAndReturns) {
  const std::vector<double> capacity = {400, 520, 800};
  auto p99_ms = [&](int rung, double load) {
    const double headroom = capacity[rung] - load;
    return headroom <= 0 ? 10000.0 : 1000.0 * std::log(100.0) / headroom;
  };
  AdaptiveController c(Ladder());
  int switches = 0;
  std::vector<double> p99_after_settling;
  for (int interval = 0; interval < 90; ++interval) {  // a fake clock: one step per interval
    const double load = interval >= 20 && interval < 50 ? 450 : 150;
    const double observed = p99_ms(c.rung(), load);
    if (interval >= 25) p99_after_settling.push_back(observed);
    const auto requests = static_cast<int64_t>(load * 5);
    switches += c.Step(Observed(observed, {1.0, 0.995, 0.985}, {0, 500, 500}, requests)).changed;
  }
  // Within five intervals of the step it found a variant that holds 160/s, and kept the SLO.
  for (double p99 : p99_after_settling) EXPECT_LE(p99, 50.0);
  EXPECT_EQ(c.rung(), 0) << "back on the most accurate variant once the load dropped";
  EXPECT_LE(switches, 4) << "down twice, up twice: no flapping";
}

}  // namespace
}  // namespace vitq::server
