// The pieces of Liu et al.'s PTQ (quant/liu2021.h) on hand-computed and constructed cases.
#include "quant/liu2021.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace vitq::quant::liu2021 {
namespace {

TEST(Pearson, MatchesHandComputedValues) {
  const std::vector<float> a = {1, 2, 3, 4};
  EXPECT_NEAR(Pearson(a, std::vector<float>{2, 4, 6, 8}), 1.0, 1e-12);
  EXPECT_NEAR(Pearson(a, std::vector<float>{4, 3, 2, 1}), -1.0, 1e-12);
  // Deviations (-1.5, -0.5, 0.5, 1.5) and (-1.5, 0.5, -0.5, 1.5): covariance 4, variances 5.
  EXPECT_NEAR(Pearson(a, std::vector<float>{1, 3, 2, 4}), 0.8, 1e-12);
  EXPECT_EQ(Pearson(a, std::vector<float>{5, 5, 5, 5}), 0.0);
}

TEST(RankingLoss, MatchesHandComputedValues) {
  const std::vector<float> ref = {1, 2, 3};
  // Same order with gaps of at least θ: no loss.
  EXPECT_DOUBLE_EQ(RankingLoss(ref, std::vector<float>{1, 2, 3}, 3, 0.2, 100, 1), 0.0);
  // Reversed: pairs (0,1), (0,2), (1,2) cost 0.2+1, 0.2+2, 0.2+1.
  EXPECT_NEAR(RankingLoss(ref, std::vector<float>{3, 2, 1}, 3, 0.2, 100, 1), 4.6, 1e-9);
  // Right order but a gap of 0.1 < θ between the first two: 0.1.
  EXPECT_NEAR(RankingLoss(ref, std::vector<float>{1, 1.1f, 3}, 3, 0.2, 100, 1), 0.1, 1e-6);
  // Two rows add up; ties in the reference do not count.
  EXPECT_NEAR(RankingLoss(std::vector<float>{1, 2, 3, 5, 5, 5},
                          std::vector<float>{3, 2, 1, 1, 2, 3}, 3, 0.2, 100, 1),
              4.6, 1e-9);
  // Sampled pairs are repeatable for one seed.
  std::vector<float> r(50), q(50);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (size_t i = 0; i < r.size(); ++i) {
    r[i] = normal(rng);
    q[i] = r[i] + 0.3f * normal(rng);
  }
  EXPECT_DOUBLE_EQ(RankingLoss(r, q, 50, 0.2, 100, 7), RankingLoss(r, q, 50, 0.2, 100, 7));
  EXPECT_GT(RankingLoss(r, q, 50, 0.2, 100, 7), 0.0);
}

TEST(AlternatingSearch, FindsTheKnownOptimumOfACoupledObjective) {
  // Maximum at (1.1, 0.7), both on the grid 0.5 + 0.01·c of [0.5, 1.2]·1; the cross term makes
  // one pass of each coordinate insufficient, so the search must alternate.
  auto objective = [](double w, double x) {
    const double dw = w - 1.1, dx = x - 0.7;
    return -(dw * dw) - (dx * dx) - 0.5 * dw * dx;
  };
  SearchOptions options;
  options.candidates = 71;
  const SearchResult r = AlternatingSearch(objective, 1.0, 1.0, options);
  EXPECT_NEAR(r.weight_step, 1.1, 1e-9);
  EXPECT_NEAR(r.act_step, 0.7, 1e-9);
  EXPECT_GT(r.rounds, 1);
  EXPECT_LE(r.rounds, options.max_rounds);
  for (size_t i = 1; i < r.history.size(); ++i) EXPECT_GE(r.history[i], r.history[i - 1]);
}

// Inputs with one outlier: the max-based Δ_X spends the 4-bit range on it. The similarity-aware
// search must find clearly better steps than the max-based ones.
TEST(SimilaritySearch, BeatsMaxBasedStepsOnALayerWithAnOutlier) {
  constexpr int64_t m = 64, k = 32, n = 16;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<float> x(m * k), w(n * k);
  for (float& v : x) v = normal(rng);
  for (float& v : w) v = 0.1f * normal(rng);
  x[7] = 40.0f;  // one outlier
  const LinearLayer layer{x, w, {}, m, k, n};
  const std::vector<float> reference = QuantizedOutput(layer, 0, 8, 0, 8);
  auto similarity = [&](double dw, double dx) {
    return Pearson(reference,
                   QuantizedOutput(layer, static_cast<float>(dw), 4, static_cast<float>(dx), 4));
  };
  const double dw0 = InitialStep(w, 4), dx0 = InitialStep(x, 4);
  SearchOptions options;
  options.candidates = 40;
  options.alpha = 0.05;  // allow steps far below the outlier-driven one
  const SearchResult r = AlternatingSearch(similarity, dw0, dx0, options);
  EXPECT_GT(r.objective, similarity(dw0, dx0) + 0.05);
  EXPECT_LT(r.act_step, dx0);
}

// Two heads of 3 tokens × 2 channels, by hand.
TEST(AttentionSearch, ScoresAndOutputsMatchHandComputedValues) {
  const std::vector<float> q = {1, 0, 0, 1, 1, 1, /*head 2*/ 2, 0, 0, 0, 0, 2};
  const std::vector<float> k = {1, 0, 0, 1, 0, 0, /*head 2*/ 1, 1, 0, 0, 1, 0};
  const std::vector<float> v = {1, 2, 3, 4, 5, 6, /*head 2*/ 0, 0, 0, 0, 0, 0};
  std::vector<float> bias(18, 0.0f);
  bias[2] = -100.0f;  // head 1, token 0 does not attend to token 2
  const AttentionOperands a{q, k, v, bias, 2, 3, 2};
  const std::vector<float> s = AttentionScores(a, 0, 0, 8);
  EXPECT_EQ(std::vector<float>(s.begin(), s.begin() + 9),
            (std::vector<float>{1, 0, -100, 0, 1, 0, 1, 1, 0}));
  EXPECT_EQ(std::vector<float>(s.begin() + 9, s.end()),
            (std::vector<float>{2, 0, 2, 0, 0, 0, 2, 0, 0}));
  const std::vector<float> out = AttentionOutput(a, s, 0, 8, 0, 8);
  const double p = std::exp(1.0) / (std::exp(1.0) + 1.0);  // token 0: softmax(1, 0, −100)
  EXPECT_NEAR(out[0], p * 1 + (1 - p) * 3, 1e-5);
  EXPECT_NEAR(out[1], p * 2 + (1 - p) * 4, 1e-5);
  EXPECT_EQ(out[6 + 3], 0.0f);  // head 2 has v = 0
}

// One outlier in q makes the max-based 4-bit step crush every other score; the search finds a
// smaller step, and a smaller softmax-output step than 1/15 for the many small probabilities.
TEST(AttentionSearch, BeatsMaxBasedStepsWithAnOutlierQuery) {
  constexpr int64_t count = 4, n = 24, d = 8;
  std::mt19937 rng(9);
  std::normal_distribution<float> normal;
  std::vector<float> q(count * n * d), k(q.size()), v(q.size());
  for (float& x : q) x = 0.5f * normal(rng);
  for (float& x : k) x = normal(rng);
  for (float& x : v) x = normal(rng);
  q[5] = 12.0f;
  const AttentionOperands a{q, k, v, {}, count, n, d};
  AttentionSearchOptions o;
  o.search.candidates = 30;
  o.search.alpha = 0.1;
  o.search.max_rounds = 4;
  const AttentionChoice c = SearchAttention(a, 4, 4, o);
  EXPECT_GT(c.scores_objective, c.scores_baseline + 0.02);
  EXPECT_GT(c.output_similarity, c.output_baseline);
  EXPECT_LT(c.q_step, 12.0f / 7);
  EXPECT_LT(c.probs_step, 1.0f / 15);
  // The ranking term only lowers the objective: without it the same search scores higher.
  o.ranking = false;
  EXPECT_GE(SearchAttention(a, 4, 4, o).scores_objective, c.scores_objective);
}

TEST(BiasCorrection, RemovesAPlantedPerChannelBias) {
  constexpr int64_t m = 200, n = 3;
  std::mt19937 rng(9);
  std::normal_distribution<float> normal;
  const std::vector<float> planted = {0.5f, -0.25f, 0.0f};
  std::vector<float> reference(m * n), quantized(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t o = 0; o < n; ++o) {
      reference[i * n + o] = normal(rng);
      // Zero-mean noise whose mean over these rows is removed below, plus the planted offset.
      quantized[i * n + o] = reference[i * n + o] + planted[o] + 0.01f * ((i % 2) ? 1.0f : -1.0f);
    }
  }
  const std::vector<float> error = MeanOutputError(reference, quantized, m, n);
  for (int64_t o = 0; o < n; ++o) EXPECT_NEAR(error[o], planted[o], 1e-5) << o;
  // Corrected outputs have no mean error left.
  for (int64_t i = 0; i < m; ++i)
    for (int64_t o = 0; o < n; ++o) quantized[i * n + o] -= error[o];
  for (float e : MeanOutputError(reference, quantized, m, n)) EXPECT_NEAR(e, 0.0f, 1e-5);
}

TEST(PickBits, RespectsTheBudgetAndPrefersSensitiveBlocks) {
  auto block = [](double sensitivity) {
    return Block{sensitivity, 100, {8, 4}, {0.0, 1.0}};  // 4 bits costs error 1
  };
  // Room for one block at 8 bits: the sensitive one (σ = 10) gets it.
  absl::StatusOr<std::vector<int>> picked =
      PickBits({block(1), block(10), block(1)}, 100 * (4 + 8 + 4));
  ASSERT_TRUE(picked.ok()) << picked.status();
  EXPECT_EQ(*picked, (std::vector<int>{1, 0, 1}));
  // Plenty of room: everything at 8 bits.
  picked = PickBits({block(1), block(10), block(1)}, 100 * 24);
  ASSERT_TRUE(picked.ok());
  EXPECT_EQ(*picked, (std::vector<int>{0, 0, 0}));
  // Less than all-4-bit: refused.
  EXPECT_FALSE(PickBits({block(1), block(10), block(1)}, 100 * 12 - 1).ok());
  // The chosen sizes never exceed the budget, for every budget in a range.
  for (int64_t budget = 1200; budget <= 2400; budget += 37) {
    picked = PickBits({block(1), block(10), block(3)}, budget);
    ASSERT_TRUE(picked.ok());
    int64_t size = 0;
    for (int c : *picked) size += 100 * (c == 0 ? 8 : 4);
    EXPECT_LE(size, budget);
  }
}

}  // namespace
}  // namespace vitq::quant::liu2021
