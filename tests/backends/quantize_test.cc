#include "backends/quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "backends/attention.h"
#include "backends/layers.h"
#include "backends/linear.h"
#include "backends/observer.h"

namespace vitq {
namespace {

TEST(PackTest, RoundTripsEveryBitWidth) {
  std::mt19937 rng(1);
  for (int bits : {8, 7, 6, 5, 4, 3, 2}) {
    const int qmax = (1 << (bits - 1)) - 1;
    for (int64_t count : {1, 7, 8, 9, 1000, 1001}) {
      std::uniform_int_distribution<int> d(bits == 8 ? -128 : -qmax - 1, qmax);
      std::vector<int8_t> values(count);
      for (auto& v : values) v = static_cast<int8_t>(d(rng));
      const std::vector<uint8_t> packed = PackSigned(values, bits);
      EXPECT_EQ(packed.size(), static_cast<size_t>((count * bits + 7) / 8));
      auto back = UnpackSigned(packed, count, bits);
      ASSERT_TRUE(back.ok());
      EXPECT_EQ(*back, values) << bits << " bits, " << count << " values";
    }
  }
}

TEST(PackTest, KnownLayout) {
  // 4-bit: low nibble first. -1 = 0xF, 3 = 0x3 → 0x3F.
  EXPECT_EQ(PackSigned({-1, 3}, 4), (std::vector<uint8_t>{0x3F}));
  // 2-bit: 1, -2, 0, -1 → codes 01 10 00 11 → 0b11001001.
  EXPECT_EQ(PackSigned({1, -2, 0, -1}, 2), (std::vector<uint8_t>{0xC9}));
}

TEST(PackTest, WrongPackedSizeIsAnError) {
  auto r = UnpackSigned({1, 2, 3}, 10, 4);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("3 bytes, 10 values need 5"), std::string::npos);
}

TEST(QuantizerTest, ActivationRangeKeepsZeroExact) {
  const ActQuant q = ActQuantFromRange(-1.0f, 3.0f, 8);
  EXPECT_FLOAT_EQ(q.scale, 4.0f / 255);
  float zero = 0.0f, out;
  FakeQuantActivations(&zero, 1, q, &out);
  EXPECT_EQ(out, 0.0f);
  const float x[3] = {-5.0f, 3.0f, 10.0f};
  uint8_t codes[3];
  QuantizeActivations(x, 3, q, codes);
  EXPECT_EQ(codes[0], 0);  // clamped
  EXPECT_EQ(codes[1], 255);
  EXPECT_EQ(codes[2], 255);                                    // clamped
  const ActQuant positive = ActQuantFromRange(2.0f, 6.0f, 4);  // range extended to include 0
  EXPECT_EQ(positive.zero_point, 0);
  EXPECT_FLOAT_EQ(positive.scale, 6.0f / 15);
}

TEST(QuantizerTest, WeightsPerChannelMaxAbs) {
  const float w[6] = {0.6f, -1.0f, 0.25f,  //
                      0.0f, 0.0f,  0.0f};
  const WeightQuant q = QuantizeWeights(w, 2, 3, 4);
  EXPECT_FLOAT_EQ(q.scales[0], 1.0f / 7);
  EXPECT_EQ(q.scales[1], 1.0f);                                   // all-zero row
  EXPECT_EQ(q.values, (std::vector<int8_t>{4, -7, 2, 0, 0, 0}));  // 4.2 → 4, 1.75 → 2
}

Tensor Random(Shape shape, uint32_t seed, float scale) {
  Tensor t(std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, scale);
  for (float& v : t.span()) v = n(rng);
  return t;
}

struct Case {
  int wbits, abits;
  Activation activation;
  bool accumulate;
};

class Int8LinearTest : public ::testing::TestWithParam<Case> {};

// The integer kernel computes exactly the fake-quant reference's integers; only the fp32
// accumulation order differs, so outputs agree to ~1e-5 of their magnitude.
TEST_P(Int8LinearTest, MatchesFakeQuantReference) {
  const Case c = GetParam();
  for (auto [m, k, n] :
       std::vector<std::array<int64_t, 3>>{{1, 64, 32}, {197, 384, 1152}, {33, 72, 17}}) {
    Tensor x = Random({m, k}, 1, 1.0f), w = Random({n, k}, 2, 0.05f), b = Random({n}, 3, 0.5f);
    for (int64_t i = 0; i < x.numel(); i += 7)
      x.data()[i] += 2.0f;  // asymmetric range: nonzero zero point
    QuantSpec spec;
    spec.precision = Precision::kInt8;
    spec.weight_bits = c.wbits;
    spec.act = ActQuantFromRange(-3.0f, 5.0f, c.abits);
    auto integer = Linear::Create("l", LinearParams{w.Clone(), b.Clone()}, spec, c.activation);
    spec.fake_quant = true;
    auto reference = Linear::Create("l", LinearParams{w.Clone(), b.Clone()}, spec, c.activation);
    ASSERT_TRUE(integer.ok() && reference.ok()) << integer.status() << reference.status();
    Tensor got({m, n}), want({m, n});
    for (int64_t i = 0; i < m * n; ++i) got.data()[i] = want.data()[i] = 0.1f * (i % 13);
    if (c.accumulate) {
      integer->ForwardAdd(x.data(), m, got.data());
      reference->ForwardAdd(x.data(), m, want.data());
    } else {
      integer->Forward(x.data(), m, got.data());
      reference->Forward(x.data(), m, want.data());
    }
    float max_ref = 0;
    for (int64_t i = 0; i < m * n; ++i) max_ref = std::max(max_ref, std::fabs(want.data()[i]));
    for (int64_t i = 0; i < m * n; ++i)
      ASSERT_NEAR(got.data()[i], want.data()[i], 2e-5f * max_ref + 1e-5f) << i;
    const std::string impl = integer->Describe(m);
    EXPECT_EQ(impl.find("ref"), std::string::npos) << impl;
    EXPECT_EQ(impl.find("gemm:jit"), std::string::npos) << impl << " (the slow path)";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Bits, Int8LinearTest,
    ::testing::Values(Case{8, 8, Activation::kNone, false}, Case{8, 8, Activation::kGelu, false},
                      Case{8, 8, Activation::kNone, true}, Case{4, 8, Activation::kNone, false},
                      Case{4, 4, Activation::kGelu, false}, Case{3, 3, Activation::kNone, true},
                      Case{2, 2, Activation::kNone, false}));

// The hand-over between integer layers (Mlp: fc1 -> fc2): fc1's output quantized in the GEMM
// epilogue onto fc2's grid equals quantizing fc1's float output, up to one code where the float
// rounding of the fused epilogue lands on the other side of a rounding boundary; and fc2 fed codes
// computes what it computes from floats that quantize to those codes.
TEST(Int8LinearTest, CodesHandedToTheNextLayerMatchQuantizingItsFloatInput) {
  const int64_t m = 197, k = 384, n = 1536;
  Tensor x = Random({m, k}, 11, 1.0f), w = Random({n, k}, 12, 0.05f), b = Random({n}, 13, 0.5f);
  QuantSpec spec;
  spec.precision = Precision::kInt8;
  spec.act = ActQuantFromRange(-4.0f, 4.0f, 8);
  ASSERT_EQ(ActQuantFromRange(-1.0f, 2.0f, 8).zero_point, 85);  // the odd zero points below
  ASSERT_EQ(ActQuantFromRange(-1.0f, 2.0f, 4).zero_point, 5);
  for (Activation activation : {Activation::kGelu, Activation::kNone}) {
    for (int bits : {8, 4}) {
      auto fc1 = Linear::Create("fc1", LinearParams{w.Clone(), b.Clone()}, spec, activation);
      ASSERT_TRUE(fc1.ok()) << fc1.status();
      // Even zero points (36 at 8 bits, 2 at 4) and odd ones (85, 5): with an odd one, rounding
      // y/s + z (the fused epilogue) and y/s then adding z can differ at ties.
      for (const ActQuant& grid :
           {ActQuantFromRange(-0.5f, 3.0f, bits), ActQuantFromRange(-1.0f, 2.0f, bits)}) {
        std::vector<uint8_t> fused(m * n), separate(m * n);
        ASSERT_TRUE(fc1->ForwardToCodes(x.data(), m, grid, fused.data()));
        Tensor y({m, n});
        fc1->Forward(x.data(), m, y.data());
        QuantizeActivations(y.data(), m * n, grid, separate.data());
        int64_t differ = 0;
        for (int64_t i = 0; i < m * n; ++i) {
          ASSERT_LE(std::abs(int{fused[i]} - int{separate[i]}), 1) << i;
          differ += fused[i] != separate[i];
          ASSERT_LE(int{fused[i]}, grid.qmax()) << i;
        }
        EXPECT_LE(differ, m * n / 1000) << bits << "-bit grid, zero point " << grid.zero_point;
      }
    }
  }
  // fc2 on codes == fc2 on the floats they stand for.
  QuantSpec spec2 = spec;
  spec2.act = ActQuantFromRange(-0.5f, 3.0f, 8);
  Tensor w2 = Random({k, n}, 14, 0.05f), b2 = Random({k}, 15, 0.5f);
  auto fc2 = Linear::Create("fc2", LinearParams{w2.Clone(), b2.Clone()}, spec2);
  ASSERT_TRUE(fc2.ok()) << fc2.status();
  ASSERT_NE(fc2->InputGrid(), nullptr);
  EXPECT_EQ(fc2->InputGrid()->zero_point, spec2.act.zero_point);
  Tensor h = Random({m, n}, 16, 1.0f);
  std::vector<uint8_t> codes(m * n);
  QuantizeActivations(h.data(), m * n, spec2.act, codes.data());
  Tensor from_codes({m, k}), from_floats({m, k});
  for (int64_t i = 0; i < m * k; ++i) from_codes.data()[i] = from_floats.data()[i] = 0.3f;
  fc2->ForwardCodes(codes.data(), m, from_codes.data(), /*accumulate=*/true);
  fc2->ForwardAdd(h.data(), m, from_floats.data());
  for (int64_t i = 0; i < m * k; ++i) ASSERT_FLOAT_EQ(from_codes.data()[i], from_floats.data()[i]);
  // Float kernels have no input grid: the Mlp keeps its float path for them.
  auto float_layer = Linear::Create("f", LinearParams{w.Clone(), b.Clone()}, QuantSpec{});
  EXPECT_EQ(float_layer->InputGrid(), nullptr);
  std::vector<uint8_t> unused(m * n);
  EXPECT_FALSE(float_layer->ForwardToCodes(x.data(), m, spec2.act, unused.data()));
}

// LayerNorm -> integer Linear and LayerNorm -> integer MLP take codes from the norm instead of
// floats; the results are exactly those of the float hand-over, on oneDNN's int8 kernel (W8A8),
// our low-bit kernel (W4A4), an integer fc1 before a float fc2, a width the low-bit kernel would
// have to pad (no codes then), and the float path.
TEST(Int8LinearTest, NormHandsCodesToTheLayerAfterItExactly) {
  const int64_t rows = 197;
  struct Case {
    int w, a;  // 0: fp32
    int64_t dim;
    bool float_fc2;
    bool reads_codes;  // the qkv-like layer has an input grid
  };
  for (Case c :
       {Case{8, 8, 384, false, true}, Case{4, 4, 384, false, true}, Case{8, 8, 384, true, true},
        Case{4, 4, 386, false, false}, Case{0, 0, 384, false, false}}) {
    const PrecisionPlan plan = [c](const std::string& name) {
      QuantSpec spec;
      if (c.w == 0 || (c.float_fc2 && name == "mlp.fc2")) return spec;  // fp32
      spec.precision = Precision::kInt8;
      spec.weight_bits = c.w;
      spec.act = ActQuantFromRange(-2.0f, 3.0f, c.a);
      return spec;
    };
    const std::string what =
        absl::StrCat("W", c.w, "A", c.a, " dim ", c.dim, c.float_fc2 ? " float fc2" : "");
    WeightStore store = WeightStore::Random(21);
    auto norm = LayerNorm::Create(store, "norm", c.dim, 1e-6f);
    auto qkv = LoadLinear(store, "qkv", c.dim, 3 * c.dim, true, plan);
    auto mlp = Mlp::Create(store, "mlp", c.dim, 4 * c.dim, plan);
    ASSERT_TRUE(norm.ok() && qkv.ok() && mlp.ok()) << what;
    ASSERT_EQ(qkv->InputGrid() != nullptr, c.reads_codes) << what << ": " << qkv->Describe(rows);
    ASSERT_EQ(mlp->fc2().InputGrid() == nullptr, c.float_fc2 || c.w == 0) << what;
    Tensor x = Random({rows, c.dim}, 22, 2.0f), normed({rows, c.dim});
    norm->Forward(x.data(), normed.data(), rows);

    Tensor fused({rows, 3 * c.dim}), separate({rows, 3 * c.dim});
    NormThenLinear(*norm, *qkv, x.data(), rows, fused.data());
    qkv->Forward(normed.data(), rows, separate.data());
    for (int64_t i = 0; i < fused.numel(); ++i)
      ASSERT_EQ(fused.data()[i], separate.data()[i]) << what << " " << i;

    Tensor residual_fused = x.Clone(), residual_separate = x.Clone();
    mlp->ForwardAddNormed(*norm, rows, residual_fused.data());
    mlp->ForwardAdd(normed.data(), rows, residual_separate.data());
    for (int64_t i = 0; i < x.numel(); ++i)
      ASSERT_EQ(residual_fused.data()[i], residual_separate.data()[i]) << what << " " << i;
  }
}

// qkv hands q, k, v to an integer attention as codes from its epilogue where its kernel can
// (oneDNN W8A8): within one code of quantizing its float output (the fused epilogue rounds in
// another order), on at most 0.1% of them. The low-bit kernel (W4A4) and the rectified attention
// take floats, so their NormQkvAttention equals the float route exactly.
TEST(Int8LinearTest, QkvHandsCodesToTheIntegerAttention) {
  const int64_t groups = 4, tokens = 49, heads = 3, d = 32, dim = heads * d, rows = groups * tokens;
  struct Case {
    int w, qkv_bits;
    bool rectify, codes;
  };
  for (Case c : {Case{8, 8, false, true}, Case{8, 4, false, true}, Case{4, 4, false, false},
                 Case{8, 8, true, false}}) {
    const std::string what = absl::StrCat("W", c.w, " qkv, ", c.qkv_bits, "-bit attention",
                                          c.rectify ? ", rectified" : "");
    const PrecisionPlan plan = [c](const std::string&) {
      QuantSpec spec;
      spec.precision = Precision::kInt8;
      spec.weight_bits = c.w;
      spec.act = ActQuantFromRange(-2.0f, 3.0f, c.w);
      return spec;
    };
    WeightStore store = WeightStore::Random(41);
    auto norm = LayerNorm::Create(store, "norm", dim, 1e-6f);
    auto qkv = LoadLinear(store, "qkv", dim, 3 * dim, true, plan);
    ASSERT_TRUE(norm.ok() && qkv.ok()) << what;
    Tensor x = Random({rows, dim}, 42, 2.0f), normed({rows, dim}), y({rows, 3 * dim});
    norm->Forward(x.data(), normed.data(), rows);
    qkv->Forward(normed.data(), rows, y.data());
    float max_abs[3] = {0, 0, 0};  // of q·(1/√d), k, v
    for (int64_t i = 0; i < y.numel(); ++i) {
      const int64_t part = (i % (3 * dim)) / dim;
      const float v = part == 0 ? y.data()[i] / std::sqrt(static_cast<float>(d)) : y.data()[i];
      max_abs[part] = std::max(max_abs[part], std::abs(v));
    }
    QuantSpec spec;
    spec.precision = Precision::kInt8;
    spec.is_attention = true;
    spec.attn.qkv_bits = c.qkv_bits;
    spec.attn.probs_bits = 8;  // 4-bit probabilities would round 49 tokens' ~1/49 to 0
    const float qmax = static_cast<float>((1 << (c.qkv_bits - 1)) - 1);
    // Ranges of 40% of each part's largest value: the clamp to ±qmax binds on a few % of codes.
    spec.attn.q_scale = 0.4f * max_abs[0] / qmax;
    spec.attn.k_scale = 0.4f * max_abs[1] / qmax;
    spec.attn.v_scale = 0.4f * max_abs[2] / qmax;
    if (c.rectify) {
      spec.attn.rectify = true;
      for (auto* v : {&spec.attn.q_norm_weight, &spec.attn.k_norm_weight})
        v->assign(static_cast<size_t>(dim), 1.0f);
      for (auto* v : {&spec.attn.q_norm_bias, &spec.attn.k_norm_bias})
        v->assign(static_cast<size_t>(dim), 0.0f);
    }
    const AttentionCore attn(heads, d, spec);
    ASSERT_EQ(attn.TakesCodes(), !c.rectify) << what;

    if (c.codes) {  // the epilogue's codes against quantizing qkv's float output
      std::vector<uint8_t> in_codes(rows * dim);
      norm->ForwardToCodes(x.data(), rows, *qkv->InputGrid(), in_codes.data());
      std::vector<int8_t> codes(rows * 3 * dim);
      ASSERT_TRUE(qkv->ForwardCodesToSymmetricCodes(
          in_codes.data(), rows, attn.QkvCodeScales().data(), c.qkv_bits, codes.data()))
          << what;
      int64_t off = 0, clamped = 0;
      for (int64_t i = 0; i < y.numel(); ++i) {
        const float scale = attn.QkvCodeScales()[i % (3 * dim)];
        const int want = SymmetricCode(y.data()[i], scale, qmax);
        ASSERT_LE(std::abs(codes[i] - want), 1) << what << " " << i;
        off += codes[i] != want;
        clamped += std::abs(want) == static_cast<int>(qmax);
      }
      EXPECT_LE(off, y.numel() / 1000) << what;
      EXPECT_GE(clamped, y.numel() / 100) << what << ": the clamp must bind to be tested";
    }
    Tensor fused({rows, dim}), separate({rows, dim});
    NormQkvAttention(*norm, *qkv, attn, x.data(), nullptr, groups, tokens, nullptr, 0,
                     fused.data());
    attn.Forward(y.data(), groups, tokens, nullptr, 0, separate.data());
    double err = 0, ref = 0;
    for (int64_t i = 0; i < fused.numel(); ++i) {
      if (!c.codes) {
        ASSERT_EQ(fused.data()[i], separate.data()[i]) << what << " " << i;
      }
      err += std::pow(fused.data()[i] - separate.data()[i], 2);
      ref += std::pow(separate.data()[i], 2);
    }
    ASSERT_GT(ref, 0.0) << what;
    EXPECT_LT(std::sqrt(err / ref), 1e-2) << what;
  }
}

TEST(Int8LinearTest, FakeQuantW8A8IsCloseToFp32) {
  Tensor x = Random({16, 128}, 4, 1.0f), w = Random({64, 128}, 5, 0.05f);
  QuantSpec spec;
  spec.precision = Precision::kInt8;
  spec.act = ActQuantFromRange(-4.0f, 4.0f, 8);
  auto q = Linear::Create("l", LinearParams{w.Clone(), Tensor()}, spec);
  auto f = Linear::Create("l", LinearParams{w.Clone(), Tensor()}, QuantSpec{});
  Tensor yq = q->Forward(x), yf = f->Forward(x);
  double num = 0, den = 0;
  for (int64_t i = 0; i < yq.numel(); ++i) {
    num += std::pow(yq.data()[i] - yf.data()[i], 2);
    den += std::pow(yf.data()[i], 2);
  }
  EXPECT_LT(std::sqrt(num / den), 0.02);  // ~1% relative L2 error at 8 bits
}

TEST(Int8LinearTest, InvalidSpecsAreRejected) {
  Tensor w = Random({4, 8}, 6, 0.1f);
  QuantSpec spec;
  spec.precision = Precision::kInt8;
  spec.act = ActQuantFromRange(-1, 1, 8);
  spec.weight_bits = 9;
  EXPECT_NE(Linear::Create("blocks.0.mlp.fc1", LinearParams{w.Clone(), Tensor()}, spec)
                .status()
                .message()
                .find("blocks.0.mlp.fc1: weight bits must be in [2, 8]"),
            std::string::npos);
  spec.weight_bits = 8;
  spec.act.scale = -1;
  EXPECT_EQ(Linear::Create("l", LinearParams{w.Clone(), Tensor()}, spec).status().code(),
            absl::StatusCode::kInvalidArgument);
  spec.act.scale = NAN;
  EXPECT_EQ(Linear::Create("l", LinearParams{w.Clone(), Tensor()}, spec).status().code(),
            absl::StatusCode::kInvalidArgument);
  spec.act = ActQuantFromRange(-1, 1, 8);
  spec.weight_scales = {1.0f, 2.0f};  // 4 channels
  EXPECT_NE(Linear::Create("l", LinearParams{w.Clone(), Tensor()}, spec)
                .status()
                .message()
                .find("2 weight scales for 4"),
            std::string::npos);
}

}  // namespace
}  // namespace vitq

namespace vitq {
namespace {

TEST(RangeObserverTest, MinMaxAndPercentiles) {
  RangeObserver obs(/*sample_size=*/100000);
  std::vector<float> x(10001);
  for (int i = 0; i <= 10000; ++i)
    x[i] = static_cast<float>(i) - 5000.0f;  // uniform in [-5000, 5000]
  obs.Observe(x.data(), 5000);
  obs.Observe(x.data() + 5000, 5001);
  EXPECT_EQ(obs.min(), -5000.0f);
  EXPECT_EQ(obs.max(), 5000.0f);
  EXPECT_EQ(obs.seen(), 10001);
  const auto [lo, hi] = obs.PercentileRange(99.0);  // drops 0.5% on each side
  EXPECT_NEAR(lo, -4950.0f, 2.0f);
  EXPECT_NEAR(hi, 4950.0f, 2.0f);
  const auto [all_lo, all_hi] = obs.PercentileRange(100.0);
  EXPECT_EQ(all_lo, -5000.0f);
  EXPECT_EQ(all_hi, 5000.0f);
}

TEST(RangeObserverTest, ReservoirKeepsAUniformSample) {
  RangeObserver obs(/*sample_size=*/1000);
  std::vector<float> x(100000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  obs.Observe(x.data(), static_cast<int64_t>(x.size()));
  // The median of a uniform sample of [0, 1e5) is near 5e4 (±5% at 1000 samples).
  const auto [lo, hi] = obs.PercentileRange(0.0);  // both ends at the median
  EXPECT_NEAR(lo, 50000.0f, 5000.0f);
  EXPECT_NEAR(hi, 50000.0f, 5000.0f);
}

}  // namespace
}  // namespace vitq
