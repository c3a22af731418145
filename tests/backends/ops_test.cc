#include "backends/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backends/bf16.h"
#include "backends/quantize.h"

namespace vitq {
namespace {

TEST(LayerNormTest, HandComputedRow) {
  // x = [1, 2, 3, 4]: mean 2.5, var 1.25 → (x - 2.5) / sqrt(1.25 + eps).
  std::vector<float> x = {1, 2, 3, 4}, y(4);
  std::vector<float> gamma = {1, 2, 1, 1}, beta = {0, 0, 1, -1};
  LayerNormRows(x.data(), y.data(), 1, 4, gamma.data(), beta.data(), 0.0f);
  const float s = 1.0f / std::sqrt(1.25f);
  EXPECT_NEAR(y[0], -1.5f * s, 1e-6);
  EXPECT_NEAR(y[1], 2 * -0.5f * s, 1e-6);
  EXPECT_NEAR(y[2], 0.5f * s + 1, 1e-6);
  EXPECT_NEAR(y[3], 1.5f * s - 1, 1e-6);
}

TEST(LayerNormTest, EpsilonMattersForConstantRow) {
  std::vector<float> x(8, 3.0f), y(8), gamma(8, 1.0f), beta(8, 0.5f);
  LayerNormRows(x.data(), y.data(), 1, 8, gamma.data(), beta.data(), 1e-5f);
  for (float v : y) EXPECT_FLOAT_EQ(v, 0.5f);  // no NaN from 0/0
}

TEST(LayerNormTest, ManyRowsMatchScalarReference) {
  const int rows = 300, cols = 97;  // odd width exercises the vector tail
  std::vector<float> x(rows * cols), y(rows * cols), g(cols), b(cols);
  for (int i = 0; i < rows * cols; ++i) x[i] = std::sin(0.37f * i) * 5 + (i % cols == 3 ? 40 : 0);
  for (int j = 0; j < cols; ++j) g[j] = 1 + 0.01f * j, b[j] = -0.02f * j;
  LayerNormRows(x.data(), y.data(), rows, cols, g.data(), b.data(), 1e-6f);
  for (int r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int j = 0; j < cols; ++j) mean += x[r * cols + j];
    mean /= cols;
    for (int j = 0; j < cols; ++j) var += (x[r * cols + j] - mean) * (x[r * cols + j] - mean);
    var /= cols;
    for (int j = 0; j < cols; ++j) {
      const double want = (x[r * cols + j] - mean) / std::sqrt(var + 1e-6) * g[j] + b[j];
      ASSERT_NEAR(y[r * cols + j], want, 1e-4) << r << "," << j;
    }
  }
}

// The LayerNorm -> integer Linear hand-over: the codes written without the float pass are exactly
// those of quantizing LayerNormRows' output (serial and parallel row counts, odd zero points).
TEST(LayerNormTest, ToCodesEqualsQuantizingItsOutput) {
  const int cols = 97;
  std::vector<float> g(cols), b(cols);
  for (int j = 0; j < cols; ++j) g[j] = 1 + 0.01f * j, b[j] = -0.02f * j;
  for (int rows : {3, 400}) {  // 400 × 97 runs on the OpenMP team
    std::vector<float> x(rows * cols), y(rows * cols);
    for (int i = 0; i < rows * cols; ++i) x[i] = std::sin(0.37f * i) * 5 + (i % cols == 3 ? 40 : 0);
    LayerNormRows(x.data(), y.data(), rows, cols, g.data(), b.data(), 1e-6f);
    for (const ActQuant& grid :
         {ActQuantFromRange(-1.0f, 2.0f, 8), ActQuantFromRange(-1.0f, 2.0f, 4),
          ActQuantFromRange(-3.0f, 3.0f, 2)}) {
      std::vector<uint8_t> want(rows * cols), got(rows * cols, 0xAA);
      QuantizeActivations(y.data(), rows * cols, grid, want.data());
      LayerNormRowsToCodes(x.data(), got.data(), rows, cols, g.data(), b.data(), 1e-6f, grid);
      ASSERT_EQ(got, want) << rows << " rows, " << grid.bits << "-bit grid";
    }
  }
}

TEST(SoftmaxTest, HandComputed) {
  std::vector<float> x = {0, std::log(3.0f), 0, 0};  // exp: 1, 3 / 1, 1
  SoftmaxRows(x.data(), 2, 2);
  EXPECT_NEAR(x[0], 0.25f, 1e-6);
  EXPECT_NEAR(x[1], 0.75f, 1e-6);
  EXPECT_NEAR(x[2], 0.5f, 1e-6);
  EXPECT_NEAR(x[3], 0.5f, 1e-6);
}

TEST(SoftmaxTest, LargeValuesDoNotOverflow) {
  std::vector<float> x = {1000, 1000, -1000};
  SoftmaxRows(x.data(), 1, 3);
  EXPECT_NEAR(x[0], 0.5f, 1e-6);
  EXPECT_NEAR(x[1], 0.5f, 1e-6);
  EXPECT_EQ(x[2], 0.0f);
}

TEST(SoftmaxTest, PeriodicBiasAndMaskMinus100) {
  // 4 rows, bias of 2 rows: rows 0,2 use bias row 0; rows 1,3 use bias row 1.
  std::vector<float> x(4 * 3, 0.0f), bias = {0, -100, -100, 0, 0, 0};
  SoftmaxRows(x.data(), 4, 3, bias.data(), 2);
  for (int r : {0, 2}) {
    EXPECT_NEAR(x[r * 3], 1.0f, 1e-6);
    EXPECT_LT(x[r * 3 + 1], 1e-40f + 1e-30f);
  }
  for (int r : {1, 3}) {
    for (int j = 0; j < 3; ++j) EXPECT_NEAR(x[r * 3 + j], 1.0f / 3, 1e-6);
  }
}

// The row max is taken in 16 lanes plus a tail. Softmax ignores a wrong shift unless exp
// saturates: two neighbours at 200 and 199 among -1000s come out as 0.731 / 0.269 only if the
// max saw one of them. Widths cover a tail of 0, 1, 5 (Swin's 49, DeiT's 197) and 15.
TEST(SoftmaxTest, RowMaxSeesEveryPositionWithAndWithoutBias) {
  const float high = 1.0f / (1.0f + std::exp(-1.0f));
  for (int cols : {16, 17, 49, 197, 31}) {
    for (int peak = 0; peak < cols; ++peak) {
      const int next = (peak + 1) % cols;
      std::vector<float> x(cols, -1000.0f), zeros(cols, 0.0f), bias(cols, -1000.0f);
      x[peak] = bias[peak] = 200.0f;
      x[next] = bias[next] = 199.0f;
      SoftmaxRows(x.data(), 1, cols);
      EXPECT_NEAR(x[peak], high, 1e-5) << cols << " columns, peak at " << peak;
      EXPECT_NEAR(x[next], 1.0f - high, 1e-5) << cols << " columns, peak at " << peak;
      SoftmaxRows(zeros.data(), 1, cols, bias.data(), 1);
      EXPECT_NEAR(zeros[peak], high, 1e-5) << cols << " columns, bias peak at " << peak;
    }
  }
}

// The integer attention's probabilities must be exactly the fake-quant model's: the codes
// QuantizeActivations gives for SoftmaxRows' output, on 8- and 4-bit grids, with a learned scale
// that clips large probabilities, with and without a bias, on DeiT's and Swin's row widths.
TEST(SoftmaxTest, CodesEqualQuantizingTheFloatSoftmax) {
  for (int cols : {197, 49}) {
    for (ActQuant grid :
         {ActQuant{8, 1.0f / 255, 0}, ActQuant{4, 1.0f / 15, 0}, ActQuant{8, 0.5f / 255, 0}}) {
      for (bool with_bias : {false, true}) {
        const int rows = 12;
        std::vector<float> x(rows * cols), bias(2 * cols);
        for (int i = 0; i < rows * cols; ++i)
          x[i] = 6.0f * std::sin(0.37f * i) * std::cos(0.011f * i);
        for (int i = 0; i < 2 * cols; ++i) bias[i] = std::cos(0.23f * i);
        const float* b = with_bias ? bias.data() : nullptr;
        std::vector<uint8_t> codes(rows * cols), expected(rows * cols);
        SoftmaxRowsToCodes(x.data(), codes.data(), rows, cols, 1.0f / grid.scale,
                           static_cast<float>(grid.qmax()), b, with_bias ? 2 : 0);
        std::vector<float> probs = x;
        SoftmaxRows(probs.data(), rows, cols, b, with_bias ? 2 : 0);
        QuantizeActivations(probs.data(), rows * cols, grid, expected.data());
        EXPECT_EQ(codes, expected) << cols << " columns, " << grid.bits << " bits, scale "
                                   << grid.scale << (with_bias ? ", bias" : "");
      }
    }
  }
}

TEST(SoftmaxTest, Bf16OutputMatchesFloat) {
  const int rows = 5, cols = 49;
  std::vector<float> x(rows * cols), ref;
  for (int i = 0; i < rows * cols; ++i) x[i] = std::cos(0.1f * i) * 4;
  ref = x;
  std::vector<uint16_t> y(rows * cols);
  SoftmaxRowsToBf16(x.data(), y.data(), rows, cols);
  SoftmaxRows(ref.data(), rows, cols);
  for (int i = 0; i < rows * cols; ++i)
    EXPECT_NEAR(Bf16ToFloat(y[i]), ref[i], ref[i] * 0.004f + 1e-7f);
}

TEST(MathTest, ExpMatchesStdExp) {
  for (float x = -87.0f; x <= 88.0f; x += 0.173f) {
    ASSERT_NEAR(ExpApprox(x) / std::exp(x), 1.0f, 3e-7f) << x;
  }
  EXPECT_EQ(ExpApprox(-200.0f), 0.0f);
}

TEST(MathTest, ErfMatchesStdErf) {
  for (float x = -6.0f; x <= 6.0f; x += 0.01f) ASSERT_NEAR(ErfApprox(x), std::erf(x), 5e-7f) << x;
}

TEST(GeluTest, ExactErfFormulation) {
  std::vector<float> x;
  for (float v = -8.0f; v <= 8.0f; v += 0.05f) x.push_back(v);
  std::vector<float> y = x;
  GeluErf(y.data(), static_cast<int64_t>(y.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = 0.5 * x[i] * (1.0 + std::erf(x[i] / std::sqrt(2.0)));
    ASSERT_NEAR(y[i], want, 2e-6) << x[i];
  }
  // The tanh approximation differs from erf-GELU by ~1e-3 near |x| = 2: make sure we are not it.
  float v = 2.0f;
  GeluErf(&v, 1);
  EXPECT_NEAR(v, 1.9544997f, 1e-6);
}

TEST(Bf16Test, RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(FloatToBf16(1.00390625f), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.01171875f), 0x3f82);  // halfway, rounds up to even
  std::vector<float> src = {1.0f, -2.5f, 1.00390625f, 3.14159f};
  std::vector<uint16_t> dst(src.size());
  FloatToBf16Array(src.data(), dst.data(), 4);
  for (size_t i = 0; i < src.size(); ++i) EXPECT_EQ(dst[i], FloatToBf16(src[i]));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
}

}  // namespace
}  // namespace vitq
