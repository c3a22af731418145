#include "backends/lowbit_gemm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backends/linear_kernels.h"

namespace vitq {
namespace {

// Every ISA path this CPU can run; the scalar reference first.
std::vector<LowBitIsa> AvailableIsas() {
  std::vector<LowBitIsa> isas;
  for (LowBitIsa isa : {LowBitIsa::kScalar, LowBitIsa::kAvx2, LowBitIsa::kAvx512Vnni}) {
    if (LowBitIsaAvailable(isa)) isas.push_back(isa);
  }
  return isas;
}

// Forces one path for the scope of a test.
class ForceIsa {
 public:
  explicit ForceIsa(LowBitIsa isa) { EXPECT_TRUE(SetLowBitIsaOverride(isa).ok()); }
  ~ForceIsa() { EXPECT_TRUE(SetLowBitIsaOverride(std::nullopt).ok()); }
};

Tensor Random(Shape shape, uint32_t seed, float scale) {
  Tensor t(std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, scale);
  for (float& v : t.span()) v = n(rng);
  return t;
}

// Uniform codes in [-qmax, qmax], (n, k).
WeightQuant RandomCodes(int64_t n, int64_t k, int bits, uint32_t seed) {
  WeightQuant w;
  w.bits = bits;
  w.rows = n;
  w.cols = k;
  w.scales.assign(n, 1.0f);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(-w.qmax(), w.qmax());
  w.values.resize(n * k);
  for (int8_t& v : w.values) v = static_cast<int8_t>(d(rng));
  return w;
}

struct GemmShape {
  int64_t m, k, n;
};
// Odd K (77: not a multiple of 4), N off the 16- and 64-channel grid (17, 100, 200: a
// partial group and a partial panel), M = 1, 7 (a short row block) and 197 (ViT tokens).
const std::vector<GemmShape> kShapes = {{1, 77, 17},   {7, 192, 100}, {197, 768, 200},
                                        {197, 77, 17}, {7, 768, 64},  {1, 192, 200}};

// ---- Packing --------------------------------------------------------------------------------

TEST(PackedLowBitWeightsTest, RoundTripAndResidentSize) {
  for (int bits : {2, 3, 4}) {
    for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{
             {17, 77}, {100, 192}, {200, 768}, {64, 4}, {1, 1}, {1152, 384}}) {
      const WeightQuant w = RandomCodes(n, k, bits, 7);
      auto packed = PackedLowBitWeights::Pack(w);
      ASSERT_TRUE(packed.ok()) << packed.status();
      EXPECT_EQ(packed->Unpack(), w.values) << bits << " bits, " << n << "×" << k;
      // Resident size: the codes at `bits` each, plus zero padding of N to 16 channels and K to
      // 4 — nothing when both are already aligned (every DeiT/Swin layer).
      const int64_t round_n = (n + 15) / 16 * 16, round_k = (k + 3) / 4 * 4;
      const size_t ideal = static_cast<size_t>((n * k * bits + 7) / 8);
      const size_t padding = static_cast<size_t>((round_n * round_k - n * k) * bits / 8);
      EXPECT_LE(packed->size_bytes(), ideal + padding) << bits << " bits, " << n << "×" << k;
      if (n % 16 == 0 && k % 4 == 0) {
        EXPECT_EQ(packed->size_bytes(), ideal);
      }
    }
  }
}

TEST(PackedLowBitWeightsTest, ExtremeCodesSurvive) {
  for (int bits : {2, 3, 4}) {
    WeightQuant w = RandomCodes(16, 8, bits, 1);
    for (int64_t i = 0; i < 128; ++i)
      w.values[i] = static_cast<int8_t>(i % 2 ? w.qmax() : -w.qmax());
    auto packed = PackedLowBitWeights::Pack(w);
    ASSERT_TRUE(packed.ok());
    EXPECT_EQ(packed->Unpack(), w.values);
  }
}

TEST(PackedLowBitWeightsTest, RejectsBadInput) {
  WeightQuant w = RandomCodes(4, 8, 4, 1);
  w.bits = 8;
  EXPECT_EQ(PackedLowBitWeights::Pack(w).status().code(), absl::StatusCode::kInvalidArgument);
  w.bits = 4;
  w.values[3] = 8;  // outside ±7
  EXPECT_EQ(PackedLowBitWeights::Pack(w).status().code(), absl::StatusCode::kInvalidArgument);
  w = RandomCodes(4, 8, 2, 1);
  w.values.pop_back();
  EXPECT_EQ(PackedLowBitWeights::Pack(w).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LowBitGemm::Create(RandomCodes(4, 8, 4, 1), ActQuant{}, {1.0f, 2.0f}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- Exact integer sums on every path -------------------------------------------------------

// With unit scales and no bias the output is Σ_k (q_x − z_x)·q_w exactly (|sum| < 2^24), so every
// path must reproduce the integer sums of a plain int64 loop, bit for bit.
TEST(LowBitGemmTest, EveryPathComputesTheExactIntegerSums) {
  for (int bits : {2, 3, 4}) {
    for (int act_bits : {4, 8}) {
      for (const GemmShape& s : kShapes) {
        const WeightQuant w = RandomCodes(s.n, s.k, bits, 11);
        ActQuant act;
        act.bits = act_bits;
        act.scale = 1.0f;
        act.zero_point = act.qmax() / 3;
        auto gemm = LowBitGemm::Create(w, act, {});
        ASSERT_TRUE(gemm.ok()) << gemm.status();
        // (m, padded K) u8; the padding columns hold junk that the zero weights must cancel.
        std::vector<uint8_t> codes(s.m * gemm->padded_k());
        std::mt19937 rng(5);
        std::uniform_int_distribution<int> d(0, act.qmax());
        for (uint8_t& c : codes) c = static_cast<uint8_t>(d(rng));
        std::vector<float> want(s.m * s.n);
        for (int64_t i = 0; i < s.m; ++i) {
          for (int64_t j = 0; j < s.n; ++j) {
            int64_t acc = 0;
            for (int64_t t = 0; t < s.k; ++t)
              acc += (codes[i * gemm->padded_k() + t] - act.zero_point) * w.values[j * s.k + t];
            want[i * s.n + j] = static_cast<float>(acc);
          }
        }
        for (LowBitIsa isa : AvailableIsas()) {
          ForceIsa force(isa);
          std::vector<float> got(s.m * s.n, -1.0f);
          gemm->Run(codes.data(), s.m, got.data(), Activation::kNone, false);
          ASSERT_EQ(got, want) << LowBitIsaName(isa) << " w" << bits << "a" << act_bits << " "
                               << s.m << "×" << s.k << "×" << s.n;
        }
      }
    }
  }
}

// ---- The Linear kernel against the fake-quant oracle ----------------------------------------

struct Case {
  int wbits, abits;
  Activation activation;
  bool accumulate;
};

class LowBitLinearTest : public ::testing::TestWithParam<Case> {};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return absl::StrCat("w", c.wbits, "a", c.abits, c.activation == Activation::kGelu ? "_gelu" : "",
                      c.accumulate ? "_add" : "");
}

// Every path gives bit-identical fp32 outputs (same int32 sums, same fma epilogue, the same
// GELU routine on the same row segments), and those match the fake-quant oracle within fp32
// rounding: both evaluate Σ_k (q_x − z_x)·s_x · q_w·s_w + b on the same integers; ours sums
// exactly in int32 and rounds ~twice, the oracle rounds each of its K fp32 products and sums.
// Summation error ≈ √K·2^-24·Σ_k |x_fq·w_fq| (random-walk rounding); 4× that plus the two
// GELU implementations' difference (≲1e-6 relative) bounds the gap.
TEST_P(LowBitLinearTest, PathsAgreeAndMatchFakeQuant) {
  const Case c = GetParam();
  for (const GemmShape& s : kShapes) {
    Tensor x = Random({s.m, s.k}, 1, 1.0f), w = Random({s.n, s.k}, 2, 0.05f),
           b = Random({s.n}, 3, 0.5f);
    for (int64_t i = 0; i < x.numel(); i += 7) x.data()[i] += 2.0f;  // nonzero zero point
    QuantSpec spec;
    spec.precision = Precision::kInt8;
    spec.weight_bits = c.wbits;
    spec.act = ActQuantFromRange(-3.0f, 5.0f, c.abits);
    LinearParams params{w.Clone(), b.Clone()};
    auto lowbit = MakeLowBitLinearKernel(params, spec, c.activation);
    ASSERT_TRUE(lowbit.ok()) << lowbit.status();
    auto oracle = MakeFakeQuantLinearKernel(params, spec, c.activation);

    auto run = [&](const LinearKernel& kernel) {
      std::vector<float> y(s.m * s.n);
      for (size_t i = 0; i < y.size(); ++i) y[i] = 0.1f * static_cast<float>(i % 13);
      if (c.accumulate) {
        kernel.ForwardAdd(x.data(), s.m, y.data());
      } else {
        kernel.Forward(x.data(), s.m, y.data());
      }
      return y;
    };
    const std::vector<float> want = run(*oracle);

    // Σ_k |x_fq·w_fq| per output, for the tolerance.
    std::vector<float> x_fq(s.m * s.k);
    FakeQuantActivations(x.data(), x.numel(), spec.act, x_fq.data());
    const std::vector<float> w_fq = DequantizeWeights(QuantizeLayerWeights(params, spec));
    std::vector<float> reference_path;
    for (LowBitIsa isa : AvailableIsas()) {
      ForceIsa force(isa);
      const std::string where = absl::StrCat(LowBitIsaName(isa), " ", s.m, "×", s.k, "×", s.n);
      EXPECT_EQ((*lowbit)->Describe(s.m),
                absl::StrCat("lowbit:w", c.wbits, ":", LowBitIsaName(isa)));
      const std::vector<float> got = run(**lowbit);
      if (reference_path.empty()) {
        reference_path = got;  // the scalar reference
      } else {
        ASSERT_EQ(got, reference_path) << where;
      }
      for (int64_t i = 0; i < s.m; ++i) {
        for (int64_t j = 0; j < s.n; ++j) {
          double magnitude = std::fabs(b.data()[j]);
          for (int64_t t = 0; t < s.k; ++t)
            magnitude += std::fabs(double(x_fq[i * s.k + t]) * w_fq[j * s.k + t]);
          const double tol = 4 * std::sqrt(double(s.k)) * std::ldexp(magnitude, -24) +
                             2e-6 * std::fabs(want[i * s.n + j]) + 1e-6;
          ASSERT_NEAR(got[i * s.n + j], want[i * s.n + j], tol) << where << " at " << i << "," << j;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Bits, LowBitLinearTest,
    ::testing::Values(Case{4, 8, Activation::kNone, false}, Case{3, 8, Activation::kNone, false},
                      Case{2, 8, Activation::kNone, false}, Case{4, 4, Activation::kNone, false},
                      Case{3, 4, Activation::kNone, false}, Case{2, 4, Activation::kNone, false},
                      Case{4, 8, Activation::kGelu, false}, Case{2, 4, Activation::kGelu, false},
                      Case{4, 8, Activation::kNone, true}, Case{3, 4, Activation::kNone, true},
                      Case{4, 8, Activation::kGelu, true}, Case{2, 8, Activation::kGelu, true}),
    CaseName);

// The integer hand-over between layers (Mlp: fc1 -> fc2) on every path: fc1's output written as
// codes on the next layer's grid is exactly QuantizeActivations of the floats it writes
// otherwise (the same floats, quantized row by row); and a layer fed codes computes exactly what
// it computes from floats that quantize to those codes.
TEST(LowBitLinearTest, CodesHandedToTheNextLayerAreExactOnEveryPath) {
  for (Activation activation : {Activation::kGelu, Activation::kNone}) {
    for (const GemmShape& s : kShapes) {
      Tensor x = Random({s.m, s.k}, 21, 1.0f), w = Random({s.n, s.k}, 22, 0.05f),
             b = Random({s.n}, 23, 0.5f);
      QuantSpec spec;
      spec.precision = Precision::kInt8;
      spec.weight_bits = 4;
      spec.act = ActQuantFromRange(-3.0f, 5.0f, 8);
      auto layer = MakeLowBitLinearKernel(LinearParams{w.Clone(), b.Clone()}, spec, activation);
      ASSERT_TRUE(layer.ok()) << layer.status();
      for (int bits : {8, 4}) {
        const ActQuant grid = ActQuantFromRange(-0.5f, 2.0f, bits);
        for (LowBitIsa isa : AvailableIsas()) {
          ForceIsa force(isa);
          const std::string where = absl::StrCat(LowBitIsaName(isa), " ", s.m, "×", s.k, "×", s.n,
                                                 " grid ", bits, " bits");
          std::vector<float> y(s.m * s.n);
          (*layer)->Forward(x.data(), s.m, y.data());
          std::vector<uint8_t> want(s.m * s.n), got(s.m * s.n);
          QuantizeActivations(y.data(), s.m * s.n, grid, want.data());
          ASSERT_TRUE((*layer)->ForwardToCodes(x.data(), s.m, grid, got.data())) << where;
          ASSERT_EQ(got, want) << where;
        }
      }
      // Fed codes: as fed the floats (K = 768 and 192 need no padding to whole 4-value groups;
      // 77 does, and then the layer asks for floats).
      const ActQuant* in = (*layer)->InputGrid();
      if (s.k % 4 != 0) {
        EXPECT_EQ(in, nullptr) << s.k;
        continue;
      }
      ASSERT_NE(in, nullptr) << s.k;
      std::vector<uint8_t> codes(s.m * s.k);
      QuantizeActivations(x.data(), s.m * s.k, *in, codes.data());
      std::vector<float> from_codes(s.m * s.n, 0.25f), from_floats(s.m * s.n, 0.25f);
      (*layer)->ForwardCodes(codes.data(), s.m, from_codes.data(), /*accumulate=*/true);
      (*layer)->ForwardAdd(x.data(), s.m, from_floats.data());
      ASSERT_EQ(from_codes, from_floats) << s.m << "×" << s.k << "×" << s.n;
    }
  }
}

// ---- Dispatch -------------------------------------------------------------------------------

TEST(LowBitDispatchTest, LinearPicksTheLowBitKernelBelow8Bits) {
  Tensor w = Random({32, 64}, 4, 0.05f);
  QuantSpec spec;
  spec.precision = Precision::kInt8;
  spec.act = ActQuantFromRange(-1, 1, 8);
  for (int bits : {2, 3, 4}) {
    spec.weight_bits = bits;
    auto layer = Linear::Create("l", LinearParams{w.Clone(), Tensor()}, spec);
    ASSERT_TRUE(layer.ok()) << layer.status();
    EXPECT_EQ(layer->Describe(1).rfind(absl::StrCat("lowbit:w", bits, ":"), 0), 0u)
        << layer->Describe(1);
  }
  spec.weight_bits = 8;  // oneDNN keeps 8-bit layers
  auto layer = Linear::Create("l", LinearParams{w.Clone(), Tensor()}, spec);
  ASSERT_TRUE(layer.ok());
  EXPECT_EQ(layer->Describe(1).find("lowbit"), std::string::npos) << layer->Describe(1);
}

TEST(LowBitDispatchTest, IsaNamesAndOverride) {
  for (LowBitIsa isa : {LowBitIsa::kScalar, LowBitIsa::kAvx2, LowBitIsa::kAvx512Vnni})
    EXPECT_EQ(ParseLowBitIsa(LowBitIsaName(isa)), isa);
  EXPECT_EQ(ParseLowBitIsa("avx512"), std::nullopt);
  EXPECT_TRUE(LowBitIsaAvailable(LowBitIsa::kScalar));
  for (LowBitIsa isa : AvailableIsas()) {
    ForceIsa force(isa);
    EXPECT_EQ(ActiveLowBitIsa(), isa);
  }
  // Without an override: VITQ_LOWBIT_ISA when it names a runnable path, else the best one.
  // (ctest runs without the variable; run once by hand with VITQ_LOWBIT_ISA=avx2 or scalar.)
  LowBitIsa want = AvailableIsas().back();
  if (const char* env = std::getenv("VITQ_LOWBIT_ISA")) {
    const std::optional<LowBitIsa> named = ParseLowBitIsa(env);
    if (named && LowBitIsaAvailable(*named)) want = *named;
  }
  EXPECT_EQ(ActiveLowBitIsa(), want);
  EXPECT_EQ(SetLowBitIsaOverride(LowBitIsa::kScalar).ok(), true);
  EXPECT_EQ(ActiveLowBitIsa(), LowBitIsa::kScalar);
  EXPECT_TRUE(SetLowBitIsaOverride(std::nullopt).ok());
  EXPECT_EQ(ActiveLowBitIsa(), want);
}

TEST(QuantizeActivationsPaddedTest, RowsMoveToTheLongerStride) {
  const ActQuant q = ActQuantFromRange(-1.0f, 3.0f, 8);
  Tensor x = Random({5, 7}, 9, 1.0f);
  std::vector<uint8_t> plain(35), padded(5 * 8, 0xAB);
  QuantizeActivations(x.data(), 35, q, plain.data());
  QuantizeActivationsPadded(x.data(), 5, 7, 8, q, padded.data());
  for (int r = 0; r < 5; ++r) {
    for (int c = 0; c < 7; ++c) EXPECT_EQ(padded[r * 8 + c], plain[r * 7 + c]) << r << "," << c;
    EXPECT_EQ(padded[r * 8 + 7], q.zero_point);
  }
}

}  // namespace
}  // namespace vitq
