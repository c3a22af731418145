// vitq-client's A/B statistics and admin argument parsing, against textbook values.
#include <gtest/gtest.h>

#include "tools/client/ab_stats.h"
#include "tools/client/admin_command.h"

namespace vitq::client {
namespace {

TEST(WilsonInterval, MatchesTextbookValues) {
  // 81 of 263 (Newcombe 1998, example): 0.2553 to 0.3662.
  const Interval i = WilsonInterval(81, 263);
  EXPECT_NEAR(i.low, 0.2553, 5e-4);
  EXPECT_NEAR(i.high, 0.3662, 5e-4);
  // All successes: the interval stays inside [0, 1] and is not degenerate.
  const Interval all = WilsonInterval(10, 10);
  EXPECT_NEAR(all.low, 0.7225, 5e-4);
  EXPECT_DOUBLE_EQ(all.high, 1.0);
  const Interval none = WilsonInterval(0, 0);
  EXPECT_EQ(none.low, 0);
  EXPECT_EQ(none.high, 1);
}

TEST(TwoProportionTest, MatchesAHandComputedExample) {
  // 90/100 vs 80/100: pooled p = 0.85, se = sqrt(0.85*0.15*0.02) = 0.050498, z = 1.9806,
  // two-sided p = 0.04764.
  const ProportionTest t = TwoProportionTest(90, 100, 80, 100);
  EXPECT_NEAR(t.difference, 0.10, 1e-12);
  EXPECT_NEAR(t.z, 1.9806, 1e-3);
  EXPECT_NEAR(t.p_value, 0.04764, 5e-4);
  // Unpooled 95% interval: 0.1 ± 1.96 * sqrt(0.09/100 + 0.16/100) = 0.1 ± 0.098.
  EXPECT_NEAR(t.difference_ci.low, 0.002, 1e-3);
  EXPECT_NEAR(t.difference_ci.high, 0.198, 1e-3);
  EXPECT_DOUBLE_EQ(TwoProportionTest(5, 10, 5, 10).p_value, 1.0);
  EXPECT_DOUBLE_EQ(TwoProportionTest(1, 0, 5, 10).p_value, 1.0);
}

TEST(SampleSize, GrowsAsTheDifferenceShrinks) {
  // p = 0.5, delta = 0.1: (1.96 + 0.8416)^2 * 0.5 / 0.01 = 392.4 -> 393.
  EXPECT_EQ(SampleSizePerGroup(0.5, 0.1), 393);
  EXPECT_GT(SampleSizePerGroup(0.9, 0.01), SampleSizePerGroup(0.9, 0.02) * 3);
  EXPECT_GT(SampleSizePerGroup(1.0, 0.01), 0) << "no zero at p = 1";
}

TEST(ParseWeights, ReadsGoodListsAndNamesTheBadEntry) {
  auto w = ParseWeights("w8a8=90, w4a4=10,fp32=0");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->at("w8a8"), 90);
  EXPECT_EQ(w->at("w4a4"), 10);
  EXPECT_EQ(w->at("fp32"), 0);
  for (const auto& [bad, phrase] :
       std::vector<std::pair<std::string, std::string>>{{"w8a8", "not VARIANT=WEIGHT"},
                                                        {"=3", "no variant name"},
                                                        {"w8a8=ninety", "not a number"},
                                                        {"w8a8=-1", ">= 0"},
                                                        {"w8a8=1,w8a8=2", "appears twice"},
                                                        {"", "give VARIANT=WEIGHT"}}) {
    auto r = ParseWeights(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(std::string(r.status().message()).find(phrase), std::string::npos) << r.status();
  }
}

vitq::v1::VariantStats Variant(const std::string& name, int64_t labeled, int64_t correct,
                               int64_t compared = 0, int64_t agreed = 0) {
  vitq::v1::VariantStats v;
  v.set_variant(name);
  v.set_requests(labeled);
  v.set_labeled(labeled);
  v.set_labeled_correct(correct);
  v.set_shadow_compared(compared);
  v.set_shadow_agreed(agreed);
  return v;
}

TEST(FormatAbReport, GivesAVerdictAgainstTheReference) {
  vitq::v1::StatsResponse stats;
  stats.set_model("fmnist-deit");
  stats.set_reference_variant("fp32");
  *stats.add_variants() = Variant("fp32", 5000, 4521);
  *stats.add_variants() = Variant("w4a4", 5000, 4355, 1000, 941);
  *stats.add_variants() = Variant("w8a8", 200, 181, 400, 399);
  const std::string report = FormatAbReport(stats);
  EXPECT_NE(report.find("w4a4 has lower labeled top-1 accuracy than fp32: 87.1% vs 90.4%"),
            std::string::npos)
      << report;
  EXPECT_NE(report.find("p < 0.001"), std::string::npos) << report;
  EXPECT_NE(
      report.find("no significant difference in labeled top-1 accuracy between w8a8 and fp32"),
      std::string::npos)
      << report;
  EXPECT_NE(report.find("99.8% [98.6, 100.0] (400)"), std::string::npos) << report;
}

TEST(FormatAbReport, UsesAgreementWhenThereAreNoLabels) {
  vitq::v1::StatsResponse stats;
  stats.set_model("m");
  stats.set_reference_variant("fp32");
  *stats.add_variants() = Variant("fp32", 0, 0);
  *stats.add_variants() = Variant("w8a8", 0, 0, 2000, 1990);
  const std::string report = FormatAbReport(stats);
  EXPECT_NE(report.find("w8a8 gives fp32's top-1 class on 99.5% of 2000 compared images"),
            std::string::npos)
      << report;
}

}  // namespace
}  // namespace vitq::client
