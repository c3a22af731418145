#include "backends/linear.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/attention.h"
#include "backends/quantize.h"

namespace vitq {
namespace {

Tensor RandomTensor(Shape shape, uint32_t seed, float scale = 1.0f) {
  Tensor t(std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, scale);
  for (float& v : t.span()) v = n(rng);
  return t;
}

// y = x·Wᵀ + b in double.
std::vector<double> NaiveLinear(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  std::vector<double> y(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = b.empty() ? 0.0 : b.data()[j];
      for (int64_t t = 0; t < k; ++t) acc += double(x.data()[i * k + t]) * w.data()[j * k + t];
      y[i * n + j] = acc;
    }
  }
  return y;
}

struct Shape3 {
  int64_t m, k, n;
};

class LinearParamTest : public ::testing::TestWithParam<Shape3> {};

TEST_P(LinearParamTest, Fp32MatchesNaive) {
  const auto [m, k, n] = GetParam();
  Tensor x = RandomTensor({m, k}, 1), w = RandomTensor({n, k}, 2, 0.1f), b = RandomTensor({n}, 3);
  auto layer =
      Linear::Create("l", LinearParams{w.Clone(), b.Clone()}, QuantSpec::Float(Precision::kFp32));
  ASSERT_TRUE(layer.ok()) << layer.status();
  Tensor y = layer->Forward(x);
  const std::vector<double> want = NaiveLinear(x, w, b);
  for (int64_t i = 0; i < m * n; ++i) ASSERT_NEAR(y.data()[i], want[i], 1e-4) << i;
  EXPECT_EQ(layer->Describe(m).find("ref"), std::string::npos) << layer->Describe(m);
}

TEST_P(LinearParamTest, Bf16WithinBf16Rounding) {
  const auto [m, k, n] = GetParam();
  Tensor x = RandomTensor({m, k}, 4), w = RandomTensor({n, k}, 5, 0.1f), b = RandomTensor({n}, 6);
  auto layer =
      Linear::Create("l", LinearParams{w.Clone(), b.Clone()}, QuantSpec::Float(Precision::kBf16));
  ASSERT_TRUE(layer.ok());
  Tensor y = layer->Forward(x);
  const std::vector<double> want = NaiveLinear(x, w, b);
  // Each product carries ≤ 2·2^-9 relative error; with random signs the sum's error is
  // ~ 2^-8·sqrt(k)·|x||w| — bound it by 4 standard deviations.
  const double tol = 4 * std::ldexp(1.0, -8) * std::sqrt(double(k)) * 0.1 + 1e-3;
  for (int64_t i = 0; i < m * n; ++i) ASSERT_NEAR(y.data()[i], want[i], tol) << i;
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearParamTest,
                         ::testing::Values(Shape3{1, 8, 4}, Shape3{197, 384, 1152},
                                           Shape3{33, 65, 17}, Shape3{50, 1536, 384}));

TEST(LinearTest, FusedGeluAndResidualAdd) {
  Tensor x = RandomTensor({7, 16}, 7), w = RandomTensor({5, 16}, 8, 0.3f), b = RandomTensor({5}, 9);
  auto gelu =
      Linear::Create("fc1", LinearParams{w.Clone(), b.Clone()}, QuantSpec{}, Activation::kGelu);
  auto plain = Linear::Create("fc", LinearParams{w.Clone(), b.Clone()}, QuantSpec{});
  ASSERT_TRUE(gelu.ok() && plain.ok());
  Tensor y = gelu->Forward(x);
  const std::vector<double> lin = NaiveLinear(x, w, b);
  for (int i = 0; i < 35; ++i) {
    ASSERT_NEAR(y.data()[i], 0.5 * lin[i] * (1 + std::erf(lin[i] / std::sqrt(2.0))), 1e-5);
  }
  Tensor acc({7, 5});
  for (int i = 0; i < 35; ++i) acc.data()[i] = i;
  plain->ForwardAdd(x.data(), 7, acc.data());
  for (int i = 0; i < 35; ++i) ASSERT_NEAR(acc.data()[i], i + lin[i], 1e-4);
}

TEST(LinearTest, NoBias) {
  Tensor x = RandomTensor({3, 4}, 10), w = RandomTensor({2, 4}, 11);
  auto layer = Linear::Create("r", LinearParams{w.Clone(), Tensor()}, QuantSpec{});
  ASSERT_TRUE(layer.ok());
  Tensor y = layer->Forward(x);
  const std::vector<double> want = NaiveLinear(x, w, Tensor());
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(y.data()[i], want[i], 1e-5);
}

TEST(LinearTest, RejectsMismatchedBias) {
  auto layer =
      Linear::Create("blocks.0.attn.proj", LinearParams{Tensor({4, 3}), Tensor({5})}, QuantSpec{});
  ASSERT_FALSE(layer.ok());
  EXPECT_NE(layer.status().message().find("blocks.0.attn.proj.bias: expected [4], found [5]"),
            std::string::npos)
      << layer.status();
}

// softmax(q·kᵀ/√d + bias)·v per head in double.
std::vector<double> NaiveAttention(const std::vector<float>& qkv, int64_t groups, int64_t n,
                                   int64_t heads, int64_t d, const std::vector<float>& bias,
                                   int64_t bias_groups) {
  const int64_t c = heads * d;
  std::vector<double> out(groups * n * c);
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < n; ++i) {
        std::vector<double> s(n);
        double mx = -1e300;
        for (int64_t j = 0; j < n; ++j) {
          double dot = 0;
          for (int64_t t = 0; t < d; ++t)
            dot += double(qkv[(g * n + i) * 3 * c + h * d + t]) *
                   qkv[(g * n + j) * 3 * c + c + h * d + t];
          s[j] = dot / std::sqrt(double(d));
          if (!bias.empty()) s[j] += bias[(((g % bias_groups) * heads + h) * n + i) * n + j];
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (double& v : s) sum += (v = std::exp(v - mx));
        for (int64_t t = 0; t < d; ++t) {
          double acc = 0;
          for (int64_t j = 0; j < n; ++j)
            acc += s[j] / sum * qkv[(g * n + j) * 3 * c + 2 * c + h * d + t];
          out[(g * n + i) * c + h * d + t] = acc;
        }
      }
    }
  }
  return out;
}

TEST(AttentionCoreTest, MatchesNaiveWithPeriodicBias) {
  const int64_t groups = 6, n = 9, heads = 3, d = 8, bias_groups = 2;
  Tensor qkv_t = RandomTensor({groups * n * 3 * heads * d}, 12);
  Tensor bias_t = RandomTensor({bias_groups * heads * n * n}, 13);
  std::vector<float> qkv(qkv_t.data(), qkv_t.data() + qkv_t.numel());
  std::vector<float> bias(bias_t.data(), bias_t.data() + bias_t.numel());
  for (int64_t e = 0; e < n * n; e += 5) bias[e] = -100.0f;  // masked pairs
  const std::vector<double> want = NaiveAttention(qkv, groups, n, heads, d, bias, bias_groups);
  for (Precision p : {Precision::kFp32, Precision::kBf16}) {
    AttentionCore attn(heads, d, QuantSpec::Float(p));
    std::vector<float> out(groups * n * heads * d);
    attn.Forward(qkv.data(), groups, n, bias.data(), bias_groups, out.data());
    const double tol = p == Precision::kFp32 ? 1e-5 : 3e-2;
    for (size_t i = 0; i < out.size(); ++i)
      ASSERT_NEAR(out[i], want[i], tol) << PrecisionName(p) << " " << i;
  }
}

// An integer attention spec at `bits` for q, k, v and probabilities, the q range ±q_range and
// the k, v range ±kv_range.
QuantSpec IntegerAttentionSpec(int bits, float q_range, float kv_range) {
  QuantSpec spec;
  spec.precision = Precision::kInt8;
  spec.is_attention = true;
  spec.attn.qkv_bits = spec.attn.probs_bits = bits;
  const float qmax = static_cast<float>((1 << (bits - 1)) - 1);
  spec.attn.q_scale = q_range / qmax;
  spec.attn.k_scale = spec.attn.v_scale = kv_range / qmax;
  return spec;
}

// Integer q·kᵀ / softmax·v against the fp32 simulation of the same quantizers, and both close
// to float attention at 8 bits.
TEST(AttentionCoreTest, IntegerMatchesFakeQuant) {
  const int64_t groups = 4, n = 49, heads = 2, d = 16, bias_groups = 2;
  Tensor qkv_t = RandomTensor({groups * n * 3 * heads * d}, 21);
  Tensor bias_t = RandomTensor({bias_groups * heads * n * n}, 22);
  std::vector<float> qkv(qkv_t.data(), qkv_t.data() + qkv_t.numel());
  std::vector<float> bias(bias_t.data(), bias_t.data() + bias_t.numel());
  const std::vector<double> exact = NaiveAttention(qkv, groups, n, heads, d, bias, bias_groups);
  for (int bits : {8, 4}) {
    // |q|/√d stays below ~1 for N(0,1) values.
    QuantSpec spec = IntegerAttentionSpec(bits, 4.0f / std::sqrt(16.0f), 4.0f);
    AttentionCore integer(heads, d, spec);
    spec.fake_quant = true;
    AttentionCore fake(heads, d, spec);
    std::vector<float> yi(groups * n * heads * d), yf(yi.size());
    integer.Forward(qkv.data(), groups, n, bias.data(), bias_groups, yi.data());
    fake.Forward(qkv.data(), groups, n, bias.data(), bias_groups, yf.data());
    double err = 0, ref = 0;
    for (size_t i = 0; i < yi.size(); ++i) {
      ASSERT_NEAR(yi[i], yf[i], 1e-4) << bits << " bits, " << i;
      err += std::pow(yf[i] - exact[i], 2);
      ref += std::pow(exact[i], 2);
    }
    if (bits == 8) {
      EXPECT_LT(std::sqrt(err / ref), 0.05) << "8-bit attention vs float";
    }
    const std::string impl = integer.Describe(groups, n);
    EXPECT_EQ(impl.find("ref"), std::string::npos) << impl;
    EXPECT_EQ(impl.find("gemm:jit"), std::string::npos) << impl;
  }
}

// The codes entry (q, k, v written as codes by the qkv Linear's epilogue) gives exactly what the
// float entry gives when the codes are the ones it would compute, with Swin's periodic bias.
TEST(AttentionCoreTest, CodesEntryMatchesFloatEntry) {
  const int64_t groups = 4, n = 49, heads = 2, d = 16, bias_groups = 2, c = heads * d;
  Tensor qkv_t = RandomTensor({groups * n * 3 * c}, 31);
  Tensor bias_t = RandomTensor({bias_groups * heads * n * n}, 32);
  for (int bits : {8, 4}) {
    const QuantSpec spec = IntegerAttentionSpec(bits, 1.0f, 3.0f);
    const float qmax = static_cast<float>((1 << (bits - 1)) - 1);
    AttentionCore attn(heads, d, spec);
    ASSERT_TRUE(attn.TakesCodes());
    ASSERT_EQ(attn.QkvCodeScales().size(), static_cast<size_t>(3 * c));
    // The codes Forward computes from the floats: q pre-scaled by 1/√d, then each part's scale.
    std::vector<int8_t> codes(qkv_t.numel());
    const float prescale = 1.0f / std::sqrt(static_cast<float>(d));
    for (int64_t i = 0; i < qkv_t.numel(); ++i) {
      const int64_t part = (i % (3 * c)) / c;
      const float x = qkv_t.data()[i];
      codes[i] = part == 0   ? SymmetricCode(x * prescale, 1.0f / spec.attn.q_scale, qmax)
                 : part == 1 ? SymmetricCode(x, 1.0f / spec.attn.k_scale, qmax)
                             : SymmetricCode(x, 1.0f / spec.attn.v_scale, qmax);
    }
    std::vector<float> from_floats(groups * n * c), from_codes(from_floats.size());
    attn.Forward(qkv_t.data(), groups, n, bias_t.data(), bias_groups, from_floats.data());
    attn.ForwardCodes(codes.data(), groups, n, bias_t.data(), bias_groups, from_codes.data());
    EXPECT_EQ(from_codes, from_floats) << bits << " bits";
  }
  QuantSpec fake;
  fake.precision = Precision::kInt8;
  fake.is_attention = true;
  fake.fake_quant = true;
  EXPECT_FALSE(AttentionCore(heads, d, fake).TakesCodes());
  EXPECT_FALSE(AttentionCore(heads, d, QuantSpec::Float(Precision::kFp32)).TakesCodes());
}

// Q-ViT's rectification: per token and head, q and k normalised over the head's channels,
// then scaled and shifted per head and channel; v untouched.
std::vector<float> RectifyReference(const std::vector<float>& qkv, int64_t rows, int64_t heads,
                                    int64_t d, const QuantSpec::Attention& a) {
  std::vector<float> out = qkv;
  const int64_t c = heads * d;
  for (int64_t r = 0; r < rows; ++r) {
    for (int part = 0; part < 2; ++part) {
      const std::vector<float>& w = part == 0 ? a.q_norm_weight : a.k_norm_weight;
      const std::vector<float>& b = part == 0 ? a.q_norm_bias : a.k_norm_bias;
      for (int64_t h = 0; h < heads; ++h) {
        const float* x = &qkv[r * 3 * c + part * c + h * d];
        double mean = 0, var = 0;
        for (int64_t j = 0; j < d; ++j) mean += x[j];
        mean /= d;
        for (int64_t j = 0; j < d; ++j) var += (x[j] - mean) * (x[j] - mean);
        const double inv = 1 / std::sqrt(var / d + a.rectify_eps);
        for (int64_t j = 0; j < d; ++j)
          out[r * 3 * c + part * c + h * d + j] =
              static_cast<float>((x[j] - mean) * inv * w[h * d + j] + b[h * d + j]);
      }
    }
  }
  return out;
}

QuantSpec::Attention RectifiedAttention(int64_t heads, int64_t d, uint64_t seed) {
  QuantSpec::Attention a;
  a.rectify = true;
  a.rectify_eps = 1e-5f;
  for (std::vector<float>* v :
       {&a.q_norm_weight, &a.q_norm_bias, &a.k_norm_weight, &a.k_norm_bias}) {
    Tensor t = RandomTensor({heads * d}, seed++);
    v->assign(t.data(), t.data() + t.numel());
  }
  return a;
}

TEST(AttentionCoreTest, RectifiesQueriesAndKeysPerHead) {
  const int64_t groups = 3, n = 10, heads = 2, d = 8;
  Tensor qkv_t = RandomTensor({groups * n * 3 * heads * d}, 31);
  std::vector<float> qkv(qkv_t.data(), qkv_t.data() + qkv_t.numel());
  QuantSpec spec;
  spec.attn = RectifiedAttention(heads, d, 32);
  const std::vector<double> want = NaiveAttention(
      RectifyReference(qkv, groups * n, heads, d, spec.attn), groups, n, heads, d, {}, 1);
  auto attn = AttentionCore::Create("blocks.0.attn.matmul", heads, d, spec);
  ASSERT_TRUE(attn.ok()) << attn.status();
  std::vector<float> out(groups * n * heads * d);
  attn->Forward(qkv.data(), groups, n, nullptr, 0, out.data());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], want[i], 1e-4) << i;
  spec.attn.k_norm_bias.pop_back();  // a parameter short
  auto bad = AttentionCore::Create("blocks.0.attn.matmul", heads, d, spec);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("rectification needs q/k norm weight and bias of 2×8"),
            std::string::npos)
      << bad.status();
}

// Rectified, learned-softmax-scale integer attention (a Q-ViT export) against its fp32
// simulation.
TEST(AttentionCoreTest, RectifiedIntegerMatchesFakeQuantWithLearnedProbsScale) {
  const int64_t groups = 2, n = 49, heads = 2, d = 16;
  Tensor qkv_t = RandomTensor({groups * n * 3 * heads * d}, 41);
  std::vector<float> qkv(qkv_t.data(), qkv_t.data() + qkv_t.numel());
  QuantSpec spec;
  spec.precision = Precision::kInt8;
  spec.is_attention = true;
  spec.attn = RectifiedAttention(heads, d, 42);
  spec.attn.qkv_bits = spec.attn.probs_bits = 4;
  spec.attn.q_scale = 0.1f;
  spec.attn.k_scale = spec.attn.v_scale = 0.4f;
  spec.attn.probs_scale = 0.01f;  // codes 0..15 cover probabilities up to 0.15
  auto integer = AttentionCore::Create("a", heads, d, spec);
  spec.fake_quant = true;
  auto fake = AttentionCore::Create("a", heads, d, spec);
  ASSERT_TRUE(integer.ok() && fake.ok());
  std::vector<float> yi(groups * n * heads * d), yf(yi.size());
  integer->Forward(qkv.data(), groups, n, nullptr, 0, yi.data());
  fake->Forward(qkv.data(), groups, n, nullptr, 0, yf.data());
  double max_abs = 0;
  for (size_t i = 0; i < yi.size(); ++i) {
    ASSERT_NEAR(yi[i], yf[i], 1e-4) << i;
    max_abs = std::max(max_abs, std::fabs(double(yf[i])));
  }
  EXPECT_GT(max_abs, 0.01);  // not all probabilities rounded to zero
}

TEST(AttentionCoreTest, NoBias) {
  const int64_t groups = 2, n = 197, heads = 2, d = 16;
  Tensor qkv_t = RandomTensor({groups * n * 3 * heads * d}, 14);
  std::vector<float> qkv(qkv_t.data(), qkv_t.data() + qkv_t.numel());
  const std::vector<double> want = NaiveAttention(qkv, groups, n, heads, d, {}, 1);
  AttentionCore attn(heads, d, QuantSpec{});
  std::vector<float> out(groups * n * heads * d);
  attn.Forward(qkv.data(), groups, n, nullptr, 0, out.data());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], want[i], 1e-5) << i;
}

}  // namespace
}  // namespace vitq
