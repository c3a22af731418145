// The statistics of an A/B report: confidence intervals of proportions (top-1 accuracy,
// agreement) and a two-proportion z-test between two variants. Pure functions, no I/O.
#pragma once

#include <cstdint>

namespace vitq::client {

struct Interval {
  double low = 0;
  double high = 0;
};

// Wilson score interval of `successes` out of `n` at confidence level given by `z` (1.96 = 95%).
// Unlike p ± z·√(p(1−p)/n) it stays inside [0, 1] and is sensible for p near 0 or 1 and small n.
// {0, 1} when n == 0.
Interval WilsonInterval(int64_t successes, int64_t n, double z = 1.96);

struct ProportionTest {
  double difference = 0;   // p_a − p_b
  Interval difference_ci;  // 95% (unpooled standard error)
  double z = 0;            // pooled z statistic
  double p_value = 1;      // two-sided
};

// Two-proportion z-test of a_successes / a_n against b_successes / b_n. p_value 1 when either n
// is 0 or both proportions are 0 or 1 (no variance).
ProportionTest TwoProportionTest(int64_t a_successes, int64_t a_n, int64_t b_successes,
                                 int64_t b_n);

// Observations per group needed to detect a difference `delta` between proportions around `p`
// with a two-sided 5% test at 80% power.
int64_t SampleSizePerGroup(double p, double delta);

}  // namespace vitq::client
