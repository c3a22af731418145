// Nuclear-norm mixed precision (quant/mixed_precision.h) on constructed blocks.
#include "quant/mixed_precision.h"

#include <gtest/gtest.h>

#include <random>

namespace vitq::quant {
namespace {

TEST(MixedPrecision, BlockNames) {
  EXPECT_EQ(BlockOf("blocks.3.attn.qkv"), "blocks.3.attn");
  EXPECT_EQ(BlockOf("blocks.3.attn.matmul"), "blocks.3.attn");
  EXPECT_EQ(BlockOf("layers.1.blocks.0.mlp.fc2"), "layers.1.blocks.0.mlp");
  EXPECT_EQ(BlockOf("layers.1.downsample.reduction"), "layers.1.downsample.reduction");
}

TEST(MixedPrecision, NuclearNormIsTheSumOfSingularValues) {
  const std::vector<float> diag = {3, 0, 0, -4};
  EXPECT_NEAR(NuclearNorm(diag.data(), 2, 2), 7.0, 1e-5);
  const std::vector<float> rank1 = {1, 2, 2, 4, 3, 6};  // (1,2,3)ᵀ·(1,2): σ = √14·√5
  EXPECT_NEAR(NuclearNorm(rank1.data(), 3, 2), std::sqrt(14.0 * 5.0), 1e-4);
}

LinearSample Sample(uint64_t seed, float output_gain) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  LinearSample s;
  s.k = 16;
  s.rows.resize(64 * s.k);
  for (float& v : s.rows) v = normal(rng);
  s.min = *std::min_element(s.rows.begin(), s.rows.end());
  s.max = *std::max_element(s.rows.begin(), s.rows.end());
  s.weight = Tensor({8, s.k});
  for (int64_t i = 0; i < s.weight.numel(); ++i) s.weight.data()[i] = output_gain * normal(rng);
  return s;
}

// Two MLP blocks alike but for the scale of their output: under a 6-bit average the one with
// the larger nuclear norm (and error) gets more bits, and the budget holds.
TEST(MixedPrecision, SensitiveBlocksGetMoreBitsWithinTheBudget) {
  std::map<std::string, LinearSample> linears;
  linears.emplace("blocks.0.mlp.fc1", Sample(1, 0.1f));
  linears.emplace("blocks.0.mlp.fc2", Sample(2, 0.1f));
  linears.emplace("blocks.1.mlp.fc1", Sample(3, 1.0f));
  linears.emplace("blocks.1.mlp.fc2", Sample(4, 1.0f));
  MixedPrecisionOptions o;
  o.candidate_bits = {4, 6, 8};
  o.avg_bits = 6;
  auto choices = AssignMixedPrecision(linears, {}, o);
  ASSERT_TRUE(choices.ok()) << choices.status();
  ASSERT_EQ(choices->size(), 2u);
  const BlockChoice& quiet = (*choices)[0];
  const BlockChoice& loud = (*choices)[1];
  EXPECT_EQ(quiet.block, "blocks.0.mlp");
  EXPECT_GT(loud.sensitivity, 5 * quiet.sensitivity);
  EXPECT_GT(loud.bits, quiet.bits);
  EXPECT_LE(quiet.bits * quiet.parameters + loud.bits * loud.parameters,
            6 * (quiet.parameters + loud.parameters));
  for (const BlockChoice& c : *choices) EXPECT_GT(c.error.front(), c.error.back()) << c.block;
}

// An attention block's σ is its attention map's nuclear norm (per row, averaged over heads), or
// with Sensitivity::kOutput the nuclear norm of its proj output like any other block.
// With the activations fixed (act_bits), a candidate's error is the weights' alone: below the
// error of the same weight bits with activations at those bits too, and the same at 8 bits.
TEST(MixedPrecision, FixedActivationBitsLeaveOnlyTheWeightError) {
  std::map<std::string, LinearSample> linears;
  linears.emplace("blocks.0.mlp.fc1", Sample(1, 1.0f));
  linears.emplace("blocks.0.mlp.fc2", Sample(2, 1.0f));
  MixedPrecisionOptions o;
  o.candidate_bits = {3, 4, 8};
  o.avg_bits = 8;
  auto follow = AssignMixedPrecision(linears, {}, o);
  o.act_bits = 8;
  auto fixed = AssignMixedPrecision(linears, {}, o);
  ASSERT_TRUE(follow.ok() && fixed.ok());
  const std::vector<double>& e_follow = (*follow)[0].error;
  const std::vector<double>& e_fixed = (*fixed)[0].error;
  EXPECT_LT(e_fixed[0], 0.9 * e_follow[0]);   // W3A8 against W3A3
  EXPECT_LT(e_fixed[1], 0.9 * e_follow[1]);   // W4A8 against W4A4
  EXPECT_DOUBLE_EQ(e_fixed[2], e_follow[2]);  // W8A8 either way
  EXPECT_EQ((*fixed)[0].act_bits, 8);
  EXPECT_EQ((*follow)[0].act_bits, (*follow)[0].bits);
}

TEST(MixedPrecision, AttentionBlockSensitivityFromTheMapOrTheOutput) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  const int64_t heads = 2, n = 5, d = 4;
  std::vector<float> qkv(3 * heads * n * d);
  for (float& v : qkv) v = normal(rng);
  AttentionSample sample;
  sample.Record(qkv.data(), qkv.data() + heads * n * d, qkv.data() + 2 * heads * n * d, heads, n, d,
                nullptr, 1);
  std::map<std::string, LinearSample> linears;
  linears.emplace("blocks.0.attn.proj", Sample(1, 1.0f));
  linears.emplace("blocks.0.attn.qkv", Sample(2, 0.1f));
  const std::map<std::string, const AttentionSample*> attentions = {
      {"blocks.0.attn.matmul", &sample}};
  MixedPrecisionOptions o;
  o.candidate_bits = {8};
  o.avg_bits = 8;
  auto by_map = AssignMixedPrecision(linears, attentions, o);
  o.sensitivity = Sensitivity::kOutput;
  auto by_output = AssignMixedPrecision(linears, attentions, o);
  ASSERT_TRUE(by_map.ok() && by_output.ok());
  ASSERT_EQ(by_map->size(), 1u);
  EXPECT_EQ((*by_map)[0].layers.size(), 3u);  // proj, qkv and the matmul
  // Softmax rows sum to 1: the map's spectral norm is at least 1 (A·1 = 1) and its Frobenius
  // norm at most √n, so its nuclear norm per row lies in [1/n, 1].
  EXPECT_LE((*by_map)[0].sensitivity, 1.0 + 1e-6);
  EXPECT_GE((*by_map)[0].sensitivity, 1.0 / double(n) - 1e-6);
  // The proj output (gain 1) is larger than the qkv one (gain 0.1): proj was used.
  EXPECT_GT((*by_output)[0].sensitivity, 1.0);
}

TEST(MixedPrecision, BudgetErrors) {
  std::map<std::string, LinearSample> linears;
  linears.emplace("blocks.0.mlp.fc1", Sample(1, 1.0f));
  MixedPrecisionOptions o;
  EXPECT_NE(AssignMixedPrecision(linears, {}, o).status().message().find("--avg-bits"),
            std::string::npos);
  o.size_budget_mb = 0.001;
  o.fixed_bits = 16000;  // 2 kB of fixed tensors: no room
  EXPECT_NE(AssignMixedPrecision(linears, {}, o).status().message().find("size budget"),
            std::string::npos);
  o.size_budget_mb = 0;
  o.avg_bits = 2;  // below the smallest candidate (3)
  EXPECT_FALSE(AssignMixedPrecision(linears, {}, o).ok());
}

}  // namespace
}  // namespace vitq::quant
