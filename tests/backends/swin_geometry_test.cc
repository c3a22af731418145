#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "backends/ops.h"
#include "backends/quantize.h"
#include "backends/swin.h"

namespace vitq::swin {
namespace {

TEST(RelativePositionIndexTest, Window2HandComputed) {
  // Tokens (0,0) (0,1) (1,0) (1,1); index = (Δy + 1)·3 + (Δx + 1).
  const std::vector<int32_t> want = {4, 3, 1, 0,  //
                                     5, 4, 2, 1,  //
                                     7, 6, 4, 3,  //
                                     8, 7, 5, 4};
  EXPECT_EQ(RelativePositionIndex(2), want);
}

TEST(RelativePositionIndexTest, Window7Range) {
  const std::vector<int32_t> idx = RelativePositionIndex(7);
  ASSERT_EQ(idx.size(), 49u * 49u);
  EXPECT_EQ(*std::min_element(idx.begin(), idx.end()), 0);
  EXPECT_EQ(*std::max_element(idx.begin(), idx.end()), 13 * 13 - 1);
  for (int i = 0; i < 49; ++i) EXPECT_EQ(idx[i * 49 + i], 6 * 13 + 6);  // Δ = 0 on the diagonal
}

TEST(ShiftMaskTest, FourByFourWindow2Shift1) {
  // Regions per coordinate: 0,1 → 0; 2 → 1; 3 → 2.
  const std::vector<float> m = ShiftMask(4, 4, 2, 1, 1);
  ASSERT_EQ(m.size(), 4u * 16u);
  for (int e = 0; e < 16; ++e) EXPECT_EQ(m[e], 0.0f) << "window (0,0) lies in one region";
  // Window (0,1): tokens (0,2) (0,3) (1,2) (1,3) → regions 1,2,1,2.
  const float* w1 = m.data() + 16;
  const float want1[16] = {0, -100, 0, -100, -100, 0, -100, 0, 0, -100, 0, -100, -100, 0, -100, 0};
  for (int e = 0; e < 16; ++e) EXPECT_EQ(w1[e], want1[e]) << e;
  // Window (1,1): four different regions → only the diagonal is 0.
  const float* w3 = m.data() + 48;
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) EXPECT_EQ(w3[i * 4 + j], i == j ? 0.0f : -100.0f);
  }
}

TEST(WindowPartitionTest, NoShift) {
  std::vector<float> x(16);
  std::iota(x.begin(), x.end(), 0.0f);  // (1, 4, 4, 1)
  std::vector<float> w(16);
  WindowPartition(x.data(), 1, 4, 4, 1, 2, 0, 0, w.data());
  EXPECT_EQ(w, (std::vector<float>{0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15}));
}

TEST(WindowPartitionTest, CyclicShiftRollsByMinusShift) {
  std::vector<float> x(16);
  std::iota(x.begin(), x.end(), 0.0f);
  std::vector<float> w(16);
  WindowPartition(x.data(), 1, 4, 4, 1, 2, 1, 1, w.data());
  // torch.roll(x, (-1, -1)): rolled[i][j] = x[(i+1)%4][(j+1)%4].
  EXPECT_EQ(std::vector<float>(w.begin(), w.begin() + 4), (std::vector<float>{5, 6, 9, 10}));
  EXPECT_EQ(std::vector<float>(w.begin() + 12, w.end()), (std::vector<float>{15, 12, 3, 0}));
}

TEST(WindowPartitionTest, PadsWithZeros) {
  std::vector<float> x(9);
  std::iota(x.begin(), x.end(), 1.0f);  // (1, 3, 3, 1), padded to 4×4
  std::vector<float> w(16, -1.0f);
  WindowPartition(x.data(), 1, 3, 3, 1, 2, 0, 0, w.data());
  EXPECT_EQ(std::vector<float>(w.begin(), w.begin() + 8),
            (std::vector<float>{1, 2, 4, 5, 3, 0, 6, 0}));
  EXPECT_EQ(std::vector<float>(w.begin() + 8, w.end()),
            (std::vector<float>{7, 8, 0, 0, 9, 0, 0, 0}));
}

// Swin's norm1 writes its rows straight in window order: exactly what normalising, then
// partitioning (and quantizing, for an integer qkv) gives, padding rows included.
TEST(WindowPartitionTest, NormGatherEqualsNormThenPartition) {
  const int64_t b = 2, h = 5, w = 5, c = 8, ws = 2, sh = 1, sw = 1;  // padded to 6×6, shifted
  std::vector<float> x(b * h * w * c), gamma(c), beta(c);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i)) * 3.0f;
  for (int64_t k = 0; k < c; ++k) {
    gamma[k] = 1.0f + 0.1f * static_cast<float>(k);
    beta[k] = 0.05f * static_cast<float>(k) - 0.2f;
  }
  const std::vector<int64_t> source = WindowSourceRows(h, w, ws, sh, sw);
  const RowGather gather{source.data(), static_cast<int64_t>(source.size()), h * w};
  const int64_t rows = b * gather.period;

  std::vector<float> normed(x.size()), want(rows * c), got(rows * c, -7.0f);
  LayerNormRows(x.data(), normed.data(), b * h * w, c, gamma.data(), beta.data(), 1e-5f);
  WindowPartition(normed.data(), b, h, w, c, ws, sh, sw, want.data());
  LayerNormGatherRows(x.data(), gather, got.data(), rows, c, gamma.data(), beta.data(), 1e-5f);
  EXPECT_EQ(got, want);

  const ActQuant grid{8, 0.02f, 100};  // a nonzero zero point: padding rows must hold it
  std::vector<uint8_t> want_codes(rows * c), got_codes(rows * c, 0);
  QuantizeActivations(want.data(), rows * c, grid, want_codes.data());
  LayerNormGatherRowsToCodes(x.data(), gather, got_codes.data(), rows, c, gamma.data(), beta.data(),
                             1e-5f, grid);
  EXPECT_EQ(got_codes, want_codes);
}

TEST(WindowReverseTest, InvertsPartitionWithShiftAndPadding) {
  const int b = 2, h = 5, w = 5, c = 3, ws = 2;  // padded to 6×6
  std::vector<float> x(b * h * w * c);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 97) - 40.0f;
  std::vector<float> windows(b * 9 * ws * ws * c), back(x.size(), 0.0f);
  WindowPartition(x.data(), b, h, w, c, ws, 1, 1, windows.data());
  const std::vector<int64_t> source = WindowSourceRows(h, w, ws, 1, 1);
  const RowGather partition{source.data(), static_cast<int64_t>(source.size()), h * w};
  WindowReverseAdd(windows.data(), partition, b * partition.period, c, back.data());
  EXPECT_EQ(back, x);
}

TEST(MergePatchesTest, OrderIsX0X1X2X3) {
  // x(0,0)=1, x(0,1)=2, x(1,0)=3, x(1,1)=4 → [x(0,0), x(1,0), x(0,1), x(1,1)].
  std::vector<float> x = {1, 2, 3, 4}, out(4);
  MergePatches(x.data(), 1, 2, 2, 1, out.data());
  EXPECT_EQ(out, (std::vector<float>{1, 3, 2, 4}));
}

TEST(MergePatchesTest, OddSizeIsZeroPadded) {
  std::vector<float> x(9);
  std::iota(x.begin(), x.end(), 1.0f);  // 3×3 → 2×2 of 4
  std::vector<float> out(16, -1.0f);
  MergePatches(x.data(), 1, 3, 3, 1, out.data());
  EXPECT_EQ(std::vector<float>(out.begin() + 4, out.begin() + 8), (std::vector<float>{3, 6, 0, 0}));
  EXPECT_EQ(std::vector<float>(out.begin() + 12, out.end()), (std::vector<float>{9, 0, 0, 0}));
}

}  // namespace
}  // namespace vitq::swin
