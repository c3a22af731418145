#include "tools/client/ab_stats.h"

#include <algorithm>
#include <cmath>

namespace vitq::client {
namespace {

constexpr double kZ95 = 1.959963984540054;   // two-sided 5%
constexpr double kZ80 = 0.8416212335729143;  // one-sided 20%: 80% power

// P(|Z| >= |z|) for a standard normal Z.
double TwoSidedNormalP(double z) { return std::erfc(std::fabs(z) / std::sqrt(2.0)); }

}  // namespace

Interval WilsonInterval(int64_t successes, int64_t n, double z) {
  if (n <= 0) return {0, 1};
  const double p = static_cast<double>(successes) / n;
  const double z2 = z * z;
  const double center = (p + z2 / (2.0 * n)) / (1 + z2 / n);
  const double half = z * std::sqrt(p * (1 - p) / n + z2 / (4.0 * n * n)) / (1 + z2 / n);
  return {std::max(0.0, center - half), std::min(1.0, center + half)};
}

ProportionTest TwoProportionTest(int64_t a_successes, int64_t a_n, int64_t b_successes,
                                 int64_t b_n) {
  ProportionTest t;
  if (a_n <= 0 || b_n <= 0) return t;
  const double pa = static_cast<double>(a_successes) / a_n;
  const double pb = static_cast<double>(b_successes) / b_n;
  t.difference = pa - pb;
  const double se_unpooled = std::sqrt(pa * (1 - pa) / a_n + pb * (1 - pb) / b_n);
  t.difference_ci = {t.difference - kZ95 * se_unpooled, t.difference + kZ95 * se_unpooled};
  const double pooled = static_cast<double>(a_successes + b_successes) / (a_n + b_n);
  const double se_pooled = std::sqrt(pooled * (1 - pooled) * (1.0 / a_n + 1.0 / b_n));
  if (se_pooled == 0) return t;
  t.z = t.difference / se_pooled;
  t.p_value = TwoSidedNormalP(t.z);
  return t;
}

int64_t SampleSizePerGroup(double p, double delta) {
  if (delta <= 0 || delta >= 1) return 0;
  // Near 0 or 1 the observed p understates the variance of what is not yet seen.
  p = std::clamp(p, delta, 1 - delta);
  const double variance = 2 * p * (1 - p);
  return static_cast<int64_t>(
      std::ceil((kZ95 + kZ80) * (kZ95 + kZ80) * variance / (delta * delta)));
}

}  // namespace vitq::client
