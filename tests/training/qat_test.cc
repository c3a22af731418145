// Q-ViT quantization-aware training: LSQ / LSQ+ forward and gradients on hand cases, the IRM's
// statistics, the DGD loss, and a 20-step QAT run of the shipped models that lowers the loss,
// exports an artifact the engine loads, and serves the same top-1 as the LibTorch fake-quant
// model on 500 test images.
#include "training/qat.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <limits>
#include <numeric>
#include <tuple>

#include "backends/artifact.h"
#include "backends/safetensors.h"
#include "preprocessing/dataset.h"
#include "training/quantizers.h"

#ifndef VITQ_MODELS_DIR
#error "VITQ_MODELS_DIR must point at the shipped models"
#endif

namespace vitq::training {
namespace {

namespace fs = std::filesystem;

std::vector<float> Values(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().contiguous().to(torch::kFloat32);
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

// ---- LSQ weights ------------------------------------------------------------------------

TEST(WeightQuantizerTest, ForwardAndGradientsOnAHandCase) {
  // 3 bits: codes in [-3, 3]. Step 0.25: 0.3 → 1.2 → 1; -0.9 → -3.6 → clipped to -3; 0.05 → 0.
  torch::Tensor w = torch::tensor({{0.3f, -0.9f, 0.05f}}).requires_grad_(true);
  WeightQuantizer q(w, 3);
  {
    torch::NoGradGuard no_grad;
    q->step.fill_(0.25);
  }
  torch::Tensor out = q(w);
  EXPECT_EQ(Values(out), (std::vector<float>{0.25f, -0.75f, 0.0f}));
  out.sum().backward();
  // Straight-through inside the range, zero where clipped.
  EXPECT_EQ(Values(w.grad()), (std::vector<float>{1, 0, 1}));
  // d/ds: (round(w/s) − w/s) inside, the clip level outside; × 1/√(K·Qp) = 1/3.
  const double want = ((1 - 1.2) + (-3) + (0 - 0.2)) / 3.0;
  EXPECT_NEAR(q->step.grad().item<double>(), want, 1e-5);
  EXPECT_EQ(Values(q->Codes(w).to(torch::kFloat32)), (std::vector<float>{1, -3, 0}));
}

// Training can carry a step through zero: the quantizer uses its magnitude, so the function and
// the exported scales stay those of |step|.
TEST(WeightQuantizerTest, ANegativeStepActsAsItsMagnitude) {
  torch::Tensor w = torch::tensor({{0.3f, -0.9f, 0.05f}});
  WeightQuantizer q(w, 3);
  {
    torch::NoGradGuard no_grad;
    q->step.fill_(-0.25);
  }
  EXPECT_EQ(Values(q(w)), (std::vector<float>{0.25f, -0.75f, 0.0f}));
  EXPECT_EQ(Values(q->Scales()), (std::vector<float>{0.25f}));
  EXPECT_EQ(Values(q->Codes(w).to(torch::kFloat32)), (std::vector<float>{1, -3, 0}));
  ActQuantizer a(4, ActQuantizerImpl::Mode::kAsymmetric);
  a->train();
  a(torch::tensor({-1.0f, 2.0f}));
  const torch::Tensor x = torch::tensor({-0.7f, 0.3f, 1.9f});
  const std::vector<float> positive = Values(a(x));
  {
    torch::NoGradGuard no_grad;
    a->step.neg_();
  }
  EXPECT_EQ(Values(a(x)), positive);
  EXPECT_GT(a->Step(), 0);
}

TEST(WeightQuantizerTest, InitialStepIsTwiceMeanAbsOverRootQp) {
  torch::Tensor w = torch::tensor({{1.0f, -3.0f}, {0.5f, 0.5f}});
  WeightQuantizer q(w, 4);  // Qp = 7
  const std::vector<float> s = Values(q->step);
  EXPECT_NEAR(s[0], 2 * 2.0 / std::sqrt(7.0), 1e-6);
  EXPECT_NEAR(s[1], 2 * 0.5 / std::sqrt(7.0), 1e-6);
  EXPECT_THROW(WeightQuantizer(w, 9), std::invalid_argument);
}

// ---- fused fake quantization ----------------------------------------------------------------

// The composition of torch ops the quantizers were first written with: the reference for the
// fused FakeQuantize's values and gradients. `s` is shaped to broadcast against x.
torch::Tensor ReferenceFakeQuant(const torch::Tensor& x, const torch::Tensor& s,
                                 const torch::Tensor& zp, int64_t lo, int64_t hi, bool min_max) {
  const torch::Tensor v = RoundPass(x / s);
  if (!min_max) return torch::clamp(v, double(lo), double(hi)) * s;
  return torch::minimum(torch::maximum(v, lo - zp), hi - zp) * s;
}

struct FakeQuantCase {
  torch::Tensor x, s, zp;  // s: (1) or (rows)
  int64_t lo, hi;
  bool min_max;
};

// Runs fused and reference on the same leaves with the same upstream gradient; compares the
// values and the gradients to x, s and zp.
void ExpectFusedMatchesReference(const FakeQuantCase& c) {
  const torch::Tensor upstream = torch::randn(c.x.sizes());
  auto leaves = [&] {
    return std::array<torch::Tensor, 3>{c.x.detach().clone().requires_grad_(true),
                                        c.s.detach().clone().requires_grad_(true),
                                        c.zp.detach().clone().requires_grad_(c.min_max)};
  };
  auto fused = leaves(), ref = leaves();
  std::vector<int64_t> s_shape(c.x.dim(), 1);
  s_shape[0] = c.s.numel() == 1 ? 1 : c.x.size(0);
  const torch::Tensor out = FakeQuantize(fused[0], fused[1], fused[2], c.lo, c.hi, c.min_max);
  const torch::Tensor want =
      ReferenceFakeQuant(ref[0], ref[1].view(s_shape), ref[2], c.lo, c.hi, c.min_max);
  EXPECT_TRUE(torch::equal(out, want));
  (out * upstream).sum().backward();
  (want * upstream).sum().backward();
  // The reference multiplies by s and divides by it again, so only the rounding differs.
  EXPECT_TRUE(torch::allclose(fused[0].grad(), ref[0].grad(), 1e-6, 1e-7)) << "gradient to x";
  EXPECT_TRUE(torch::equal(fused[0].grad() == 0, ref[0].grad() == 0)) << "where x gets none";
  EXPECT_TRUE(torch::allclose(fused[1].grad(), ref[1].grad(), 1e-4, 1e-4))
      << fused[1].grad() << " vs " << ref[1].grad();
  if (c.min_max) {
    EXPECT_NEAR(fused[2].grad().item<double>(), ref[2].grad().item<double>(),
                1e-4 * (1 + std::abs(ref[2].grad().item<double>())));
    EXPECT_NE(ref[2].grad().item<double>(), 0.0);  // the case does reach the edges
  }
}

// Values exactly on the codes' grid of step `s` at both edges (ties in the min/max rule) and
// half a step below the low edge, mixed into a normal sample (whose tails fall outside).
torch::Tensor WithEdgeValues(torch::Tensor x, float s, int64_t lo, int64_t hi, int64_t zp) {
  x = x.clone();
  const int64_t n = x.numel();
  float* p = x.data_ptr<float>();
  for (int64_t i = 0; i < n; i += 7) p[i] = s * static_cast<float>((i % 2 ? hi : lo) - zp);
  for (int64_t i = 3; i < n; i += 11) p[i] = s * (static_cast<float>(lo - zp) - 0.5f);
  return x;
}

TEST(FakeQuantTest, AsymmetricPerTensorMatchesTheTorchComposition) {
  torch::manual_seed(1);
  const torch::Tensor x = WithEdgeValues(torch::randn({64, 51, 40}) * 2, 0.3f, 0, 15, 5);
  ExpectFusedMatchesReference({x, torch::tensor({0.3f}), torch::tensor({5.0f}), 0, 15, true});
}

TEST(FakeQuantTest, SignedAndUnsignedPerTensorMatchTheTorchComposition) {
  torch::manual_seed(2);
  const torch::Tensor x = WithEdgeValues(torch::randn({3, 40000}), 0.2f, -7, 7, 0);
  ExpectFusedMatchesReference({x, torch::tensor({0.2f}), torch::zeros({1}), -7, 7, false});
  const torch::Tensor probs = WithEdgeValues(torch::rand({5000}), 0.05f, 0, 3, 0);
  ExpectFusedMatchesReference({probs, torch::tensor({0.05f}), torch::zeros({1}), 0, 3, false});
}

TEST(FakeQuantTest, PerChannelStepsMatchTheTorchComposition) {
  torch::manual_seed(3);
  // One step for every row; the edge values sit on the grid of the rows whose step is 0.04.
  torch::Tensor steps = torch::rand({24}) * 0.1 + 0.01;
  steps.slice(0, 0, 24, 3).fill_(0.04f);
  const torch::Tensor w = WithEdgeValues(torch::randn({24, 130}) * 0.1, 0.04f, -1, 1, 0);
  ExpectFusedMatchesReference({w, steps, torch::zeros({1}), -1, 1, false});
  // A transposed weight: rows are no longer contiguous.
  const torch::Tensor wt = (torch::randn({130, 24}) * 0.1).t();
  ExpectFusedMatchesReference({wt, steps, torch::zeros({1}), -3, 3, false});
  EXPECT_THROW(FakeQuantize(w, torch::rand({5}), torch::zeros({1}), -1, 1, false),
               std::invalid_argument);
}

// A diverging run must show as NaN, not as a quantized value.
TEST(FakeQuantTest, NanStaysNan) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (bool min_max : {false, true}) {
    const torch::Tensor out = FakeQuantize(torch::tensor({nan, 0.3f}), torch::tensor({0.1f}),
                                           torch::tensor({2.0f}), 0, 7, min_max);
    EXPECT_TRUE(std::isnan(out[0].item<float>())) << min_max;
    EXPECT_FLOAT_EQ(out[1].item<float>(), 0.3f) << min_max;
  }
}

TEST(FakeQuantTest, NonContiguousInputMatchesTheTorchComposition) {
  torch::manual_seed(4);
  const torch::Tensor x = torch::randn({32, 48, 20}).transpose(0, 1);  // like q|k|v head slices
  ExpectFusedMatchesReference({x, torch::tensor({0.25f}), torch::tensor({3.0f}), 0, 7, true});
  EXPECT_THROW(
      FakeQuantize(x.to(torch::kFloat64), torch::tensor({0.25f}), torch::zeros({1}), 0, 7, false),
      std::invalid_argument);
}

// ---- LSQ+ activations -------------------------------------------------------------------

TEST(ActQuantizerTest, AsymmetricInitCoversTheBatchWithAnIntegerZeroPoint) {
  ActQuantizer q(4, ActQuantizerImpl::Mode::kAsymmetric);  // codes 0..15
  q->train();
  const torch::Tensor x = torch::tensor({-1.0f, 0.0f, 2.0f});
  q(x);
  ASSERT_TRUE(q->initialized());
  EXPECT_NEAR(q->Step(), 3.0 / 15, 1e-6);
  EXPECT_EQ(q->ZeroPoint(), 5);  // round(1 / 0.2)
}

TEST(ActQuantizerTest, AsymmetricForwardIsTheEngineFormula) {
  ActQuantizer q(3, ActQuantizerImpl::Mode::kAsymmetric);  // codes 0..7
  q->train();
  q(torch::tensor({-1.0f, 1.0f}));  // initialise, then set by hand
  {
    torch::NoGradGuard no_grad;
    q->step.fill_(0.5);
    q->zero_point.fill_(2.2);  // the forward pass uses the integer 2
  }
  EXPECT_EQ(q->ZeroPoint(), 2);
  torch::Tensor x = torch::tensor({-2.0f, -0.6f, 0.74f, 3.0f}).requires_grad_(true);
  torch::Tensor out = q(x);
  // engine: (clamp(round(x/s) + zp, 0, 7) − zp)·s → codes 0, 1, 3, 7 → −1, −0.5, 0.5, 2.5
  EXPECT_EQ(Values(out), (std::vector<float>{-1.0f, -0.5f, 0.5f, 2.5f}));
  out.sum().backward();
  EXPECT_EQ(Values(x.grad()), (std::vector<float>{0, 1, 1, 0}));
  // The zero point learns only from clipped values: −s below (the low edge −zp·s moves down
  // when zp grows), −s above; scaled by 1/√(features per sample · Qmax) = 1/√(1·7) (a 1-D
  // input is a batch of 4 one-value samples).
  EXPECT_NEAR(q->zero_point.grad().item<double>(), (-0.5 - 0.5) / std::sqrt(7.0), 1e-5);
}

TEST(ActQuantizerTest, SignedAndUnsignedModes) {
  ActQuantizer s(4, ActQuantizerImpl::Mode::kSigned);
  s->train();
  const torch::Tensor x = torch::tensor({-1.0f, 0.5f, 1.0f, 0.1f});
  s(x);
  EXPECT_NEAR(s->Step(), 2 * 0.65 / std::sqrt(7.0), 1e-6);  // 2·mean|x|/√Qp
  EXPECT_EQ(s->lowest(), -7);
  EXPECT_EQ(s->highest(), 7);
  EXPECT_EQ(s->ZeroPoint(), 0);
  ActQuantizer u(2, ActQuantizerImpl::Mode::kUnsigned);
  u->train();
  const torch::Tensor probs = torch::tensor({0.0f, 0.2f, 0.3f, 0.5f});
  u(probs);
  {
    torch::NoGradGuard no_grad;
    u->step.fill_(0.1);
  }
  EXPECT_EQ(Values(u(probs)), (std::vector<float>{0.0f, 0.2f, 0.3f, 0.3f}));  // codes 0..3
}

TEST(ActQuantizerTest, RefusesToRunUninitialisedInEval) {
  ActQuantizer q(8, ActQuantizerImpl::Mode::kAsymmetric);
  q->eval();
  EXPECT_THROW(q(torch::ones({2})), std::logic_error);
}

// ---- IRM ------------------------------------------------------------------------------

TEST(RectifierTest, NormalizesEachTokenAndHeadToZeroMeanUnitVariance) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({2, 3, 5, 8}) * 4 + 2.5;  // (B, heads, N, d)
  Rectifier r(3, 8);
  const torch::Tensor n = r->Normalize(x);
  EXPECT_LT(n.mean(-1).abs().max().item<double>(), 1e-5);
  EXPECT_LT((n.var(-1, /*unbiased=*/false) - 1).abs().max().item<double>(), 1e-3);
  // The learnable affine, per head and channel, is applied after the normalisation.
  {
    torch::NoGradGuard no_grad;
    r->weight.fill_(2);
    r->bias.fill_(-1);
  }
  r->eval();
  EXPECT_TRUE(torch::allclose(r(x), n * 2 - 1, 1e-5, 1e-5));
}

TEST(RectifierTest, InitialisesFromTheFirstBatchToKeepTheChannelMeans) {
  torch::manual_seed(4);
  const torch::Tensor x = torch::randn({4, 2, 6, 8}) * 3 + torch::arange(8).to(torch::kFloat32);
  Rectifier r(2, 8);
  r->train();
  r(x);
  const torch::Tensor channel_means = x.mean(std::vector<int64_t>{0, 2});
  EXPECT_TRUE(torch::allclose(r->bias, channel_means, 1e-5, 1e-5));
  EXPECT_GT(r->weight.min().item<double>(), 1.0);  // about the per-token spread, not 1
}

TEST(RectifierTest, AffineFormStartsAsTheIdentityAndIsAPerChannelMap) {
  torch::manual_seed(7);
  const torch::Tensor x = torch::randn({4, 2, 6, 8}) * 3 + torch::arange(8).to(torch::kFloat32);
  Rectifier r(2, 8, Irm::kAffine);
  r->train();
  EXPECT_TRUE(torch::allclose(r(x), x, 1e-5, 1e-5));  // the pretrained function is kept
  EXPECT_TRUE(torch::allclose(r->mean, x.mean(std::vector<int64_t>{0, 2}), 1e-5, 1e-5));
  {
    torch::NoGradGuard no_grad;
    r->weight.uniform_(-2, 2);
    r->bias.normal_();
  }
  // q̃ = μ + γ·(q − μ) + β·σ, which is what export folds: scale·q + shift.
  const auto per_channel = [](const torch::Tensor& t) { return t.view({1, 2, 1, 8}); };
  const torch::Tensor expected = per_channel(r->mean) +
                                 per_channel(r->weight) * (x - per_channel(r->mean)) +
                                 per_channel(r->bias) * per_channel(r->std);
  EXPECT_TRUE(torch::allclose(r(x), expected, 1e-4, 1e-4));
  EXPECT_TRUE(torch::allclose(
      r(x), x * per_channel(r->AffineScale()) + per_channel(r->AffineShift()), 1e-4, 1e-4));
}

// ---- DGD ------------------------------------------------------------------------------

TEST(DgdTest, ZeroForIdenticalAndGrowsWithPerturbation) {
  torch::manual_seed(5);
  QkCapture teacher;
  for (int l = 0; l < 2; ++l) {
    teacher.q.push_back(torch::randn({2, 3, 7, 4}));
    teacher.k.push_back(torch::randn({2, 3, 7, 4}));
  }
  EXPECT_NEAR(DgdLoss(teacher, teacher).item<double>(), 0.0, 1e-6);
  double previous = 0;
  for (double noise : {0.01, 0.1, 0.5}) {
    QkCapture student;
    for (size_t l = 0; l < teacher.q.size(); ++l) {
      student.q.push_back(teacher.q[l] + noise * torch::randn_like(teacher.q[l]));
      student.k.push_back(teacher.k[l] + noise * torch::randn_like(teacher.k[l]));
    }
    const double loss = DgdLoss(student, teacher).item<double>();
    EXPECT_GT(loss, previous) << "noise " << noise;
    previous = loss;
  }
  // Similarity matrices do not depend on the scale of q (quantizer steps, 1/√d).
  QkCapture scaled = teacher;
  for (auto& q : scaled.q) q = q * 7.0;
  EXPECT_NEAR(DgdLoss(scaled, teacher).item<double>(), 0.0, 1e-5);
}

TEST(DgdTest, MeanReductionDividesTheSumByTheNumberOfLayerHeadTerms) {
  torch::manual_seed(8);
  QkCapture teacher, student;
  for (int l = 0; l < 3; ++l) {  // 3 layers × 4 heads × (q, k) = 24 terms
    teacher.q.push_back(torch::randn({2, 4, 7, 4}));
    teacher.k.push_back(torch::randn({2, 4, 7, 4}));
    student.q.push_back(torch::randn({2, 4, 7, 4}));
    student.k.push_back(torch::randn({2, 4, 7, 4}));
  }
  const double sum = DgdLoss(student, teacher, DgdReduction::kSum).item<double>();
  EXPECT_NEAR(DgdLoss(student, teacher, DgdReduction::kMean).item<double>(), sum / 24, 1e-5);
  EXPECT_GT(sum / 24, 0.1);  // unrelated q, k: far from zero
}

// The paper's sum written out term by term: Σ_layers Σ_{q,k} Σ_heads ‖G_T − G_S‖_F, batch mean.
double DgdByHand(const QkCapture& student, const QkCapture& teacher) {
  double total = 0;
  auto term = [&](const torch::Tensor& s, const torch::Tensor& t) {
    for (int64_t b = 0; b < s.size(0); ++b)
      for (int64_t h = 0; h < s.size(1); ++h) {
        const torch::Tensor gs = s[b][h].matmul(s[b][h].t()), gt = t[b][h].matmul(t[b][h].t());
        total += (gt / gt.norm() - gs / gs.norm()).norm().item<double>() / double(s.size(0));
      }
  };
  for (size_t l = 0; l < student.q.size(); ++l) {
    term(student.q[l], teacher.q[l]);
    term(student.k[l], teacher.k[l]);
  }
  return total;
}

// Swin captures differ in shape from stage to stage (windows, heads, tokens): the loss must
// still be the sum over every layer and head.
TEST(DgdTest, LayersOfDifferentShapesAddUpAsTheFormulaSays) {
  torch::manual_seed(9);
  QkCapture teacher, student;
  const std::vector<std::vector<int64_t>> shapes{
      {8, 2, 16, 4}, {8, 2, 16, 4}, {2, 4, 16, 8}, {6, 3, 9, 5}};
  for (const auto& shape : shapes) {
    teacher.q.push_back(torch::randn(shape));
    teacher.k.push_back(torch::randn(shape));
    student.q.push_back(teacher.q.back() + 0.3 * torch::randn(shape));
    student.k.push_back(teacher.k.back() + 0.3 * torch::randn(shape));
  }
  const double want = DgdByHand(student, teacher);
  EXPECT_NEAR(DgdLoss(student, teacher, DgdReduction::kSum).item<double>(), want, 1e-4 * want);
  const double terms = 2 * (2 + 2 + 4 + 3);  // (q, k) × heads of each layer
  EXPECT_NEAR(DgdLoss(student, teacher, DgdReduction::kMean).item<double>(), want / terms,
              1e-4 * want / terms);
  QkCapture mismatched = teacher;
  mismatched.q[2] = torch::randn({2, 4, 16, 4});
  EXPECT_THROW(DgdLoss(student, mismatched), std::invalid_argument);
}

// DgdLoss's backward is written out; autograd through PatchSimilarity is the reference.
TEST(DgdTest, GradientsAreThoseOfTheTorchComposition) {
  torch::manual_seed(10);
  QkCapture teacher, fused, composed;
  for (int l = 0; l < 2; ++l) {
    for (auto* list : {&teacher.q, &teacher.k}) list->push_back(torch::randn({3, 2, 9, 5}));
  }
  for (size_t l = 0; l < teacher.q.size(); ++l) {
    for (auto [t, f, c] : {std::tuple{&teacher.q, &fused.q, &composed.q},
                           std::tuple{&teacher.k, &fused.k, &composed.k}}) {
      const torch::Tensor s = (*t)[l] + 0.4 * torch::randn_like((*t)[l]);
      f->push_back(s.clone().requires_grad_(true));
      c->push_back(s.clone().requires_grad_(true));
    }
  }
  // One student layer equal to its teacher: distance 0, where the gradient must be 0 too.
  fused.k[1] = teacher.k[1].clone().requires_grad_(true);
  composed.k[1] = teacher.k[1].clone().requires_grad_(true);
  const torch::Tensor loss = DgdLoss(fused, teacher, DgdReduction::kSum);
  torch::Tensor want = torch::zeros({});
  for (size_t l = 0; l < teacher.q.size(); ++l) {
    for (auto [t, c] : {std::pair{&teacher.q, &composed.q}, std::pair{&teacher.k, &composed.k}}) {
      const torch::Tensor diff = PatchSimilarity((*t)[l]) - PatchSimilarity((*c)[l]);
      want = want + diff.flatten(2).norm(2, -1).sum(1).mean();
    }
  }
  EXPECT_NEAR(loss.item<double>(), want.item<double>(), 1e-5);
  (3 * loss).backward();
  (3 * want).backward();
  for (size_t l = 0; l < teacher.q.size(); ++l) {
    EXPECT_TRUE(torch::allclose(fused.q[l].grad(), composed.q[l].grad(), 1e-4, 1e-5)) << l;
    EXPECT_TRUE(torch::allclose(fused.k[l].grad(), composed.k[l].grad(), 1e-4, 1e-5)) << l;
  }
  EXPECT_EQ(fused.k[1].grad().abs().max().item<float>(), 0.0f);
  EXPECT_GT(fused.q[0].grad().abs().max().item<float>(), 1e-3);
}

TEST(DgdTest, PatchSimilarityHasUnitFrobeniusNorm) {
  torch::manual_seed(6);
  const torch::Tensor g = PatchSimilarity(torch::randn({2, 3, 5, 4}));
  EXPECT_EQ(g.sizes(), (std::vector<int64_t>{2, 3, 5, 5}));
  EXPECT_TRUE(torch::allclose(g.flatten(2).norm(2, -1), torch::ones({2, 3}), 1e-5, 1e-5));
}

// ---- QAT end to end ------------------------------------------------------------------------

struct SmokeCase {
  const char* model;
  Irm irm;
};

class QatSmokeTest : public ::testing::TestWithParam<SmokeCase> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("vitq_qat_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

double Mean(const std::vector<double>& v, size_t begin, size_t end) {
  return std::accumulate(v.begin() + begin, v.begin() + end, 0.0) / (end - begin);
}

TEST_P(QatSmokeTest, TwentyStepsLowerTheLossAndServeLikeTheFakeQuantModel) {
  const std::string model = std::string(VITQ_MODELS_DIR) + "/" + GetParam().model + ".safetensors";
  QatOptions o;
  o.irm = GetParam().irm;
  o.bits = {4, 4};
  o.train.epochs = 1;
  o.train.batch_size = 32;
  o.train.max_steps_per_epoch = 20;
  o.train.lr = 2e-4;
  o.train.min_lr = 2e-4;
  o.train.warmup_epochs = 0;
  o.train.weight_decay = 0;
  o.train.label_smoothing = 0;
  o.train.out_dir = (dir_ / "run").string();
  auto models = MakeQatModels(model, o);
  ASSERT_TRUE(models.ok()) << models.status();
  auto train = data::LoadDataset("fashion-mnist:train:640");
  auto test = data::LoadDataset("fashion-mnist:test:500");
  ASSERT_TRUE(train.ok() && test.ok()) << train.status() << test.status();
  auto result = TrainQat(*models, *train, *test, o);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->step_losses.size(), 20u);
  EXPECT_LT(Mean(result->step_losses, 15, 20), Mean(result->step_losses, 0, 5));

  const std::string artifact = (dir_ / "qat.safetensors").string();
  ASSERT_TRUE(
      ExportQatArtifact(*models->student, models->config, R"({"method":"qvit"})", artifact).ok());
  auto file = SafetensorsFile::Open(artifact);
  ASSERT_TRUE(file.ok()) << file.status();
  // Learned softmax scales and rectification are format version 2 (a version-1 reader refuses).
  EXPECT_EQ((*file)->metadata().at("vitq.format_version"), "2");
  auto info = ReadArtifactInfo(**file);
  ASSERT_TRUE(info.ok()) << info.status();
  int rectified = 0, learned_probs = 0, low_bit = 0;
  for (const auto& [name, spec] : info->layers) {
    rectified += spec.is_attention && spec.attn.rectify;
    learned_probs += spec.is_attention && spec.attn.probs_scale > 0;
    low_bit += !spec.is_attention && spec.weight_bits == 4;
  }
  EXPECT_GT(learned_probs, 0);
  // The per-token (layernorm) IRM is served by the engine's rectification step; the affine
  // one is folded into the qkv projections.
  EXPECT_EQ(rectified, GetParam().irm == Irm::kLayerNorm ? learned_probs : 0);
  EXPECT_GT(low_bit, 0);
  EXPECT_EQ(info->layers.at(std::string(GetParam().model) == "fmnist-deit" ? "head" : "head.fc")
                .weight_bits,
            8);

  auto agreement = CompareWithEngine(*models->student, models->config, artifact, *test, 500);
  ASSERT_TRUE(agreement.ok()) << agreement.status();
  EXPECT_EQ(agreement->images, 500);
  EXPECT_GE(agreement->top1_agreement, 0.995);  // the issue's criterion
  // The worst image: at 4 bits a rounding tie that goes the other way in the integer kernels
  // flips a q or k code and moves that image's logits a little (seen: 0.984).
  EXPECT_GT(agreement->min_cosine, 0.95);
  EXPECT_GT(agreement->engine_top1, 0.5);  // far above chance after 20 steps from the float model
}

INSTANTIATE_TEST_SUITE_P(
    ShippedModels, QatSmokeTest,
    ::testing::Values(SmokeCase{"fmnist-deit", Irm::kAffine},
                      SmokeCase{"fmnist-swin", Irm::kAffine},
                      SmokeCase{"fmnist-deit", Irm::kLayerNorm}),
    [](const auto& info) {
      return std::string(info.param.model == std::string("fmnist-deit") ? "deit" : "swin") +
             (info.param.irm == Irm::kAffine ? "_affine_irm" : "_layernorm_irm");
    });

// An affine IRM far from the identity (negative scales included) must fold exactly into the
// qkv projection: the served artifact computes what the fake-quant student computes. At 8 bits,
// where an untrained student is not so fragile that float rounding flips codes.
TEST_F(QatSmokeTest, AffineIrmFoldsExactlyIntoTheQkvProjection) {
  QatOptions o;
  o.bits = {8, 8};
  auto models = MakeQatModels(std::string(VITQ_MODELS_DIR) + "/fmnist-deit.safetensors", o);
  ASSERT_TRUE(models.ok()) << models.status();
  auto test = data::LoadDataset("fashion-mnist:test:300");
  ASSERT_TRUE(test.ok()) << test.status();
  Classifier& student = *models->student;
  const ModelConfig& config = models->config;
  {
    torch::NoGradGuard no_grad;
    std::vector<int64_t> first(64);
    std::iota(first.begin(), first.end(), 0);
    student.train();  // the first batch initialises the quantizers and the IRM statistics
    student.Forward(MakeBatch(*test, first, config.preprocess.mean[0], config.preprocess.std[0]));
    torch::manual_seed(9);
    int rectifiers = 0;
    for (const auto& item : student.named_modules("", false)) {
      auto* r = dynamic_cast<RectifierImpl*>(item.value().get());
      if (!r) continue;
      ASSERT_EQ(r->form(), Irm::kAffine);
      r->weight.uniform_(0.5, 1.5).mul_(torch::randint(0, 2, r->weight.sizes()) * 2 - 1);
      r->bias.normal_(0, 0.5);
      ++rectifiers;
    }
    EXPECT_EQ(rectifiers, 2 * static_cast<int>(config.depth));
  }
  const std::string artifact = (dir_ / "folded.safetensors").string();
  ASSERT_TRUE(ExportQatArtifact(student, config, R"({"method":"qvit"})", artifact).ok());
  auto file = SafetensorsFile::Open(artifact);
  ASSERT_TRUE(file.ok()) << file.status();
  for (const std::string& name : (*file)->Names()) {
    EXPECT_EQ(name.find("q_norm."), std::string::npos) << name << ": belongs in the qkv projection";
    EXPECT_EQ(name.find("k_norm."), std::string::npos) << name << ": belongs in the qkv projection";
  }
  auto agreement = CompareWithEngine(student, config, artifact, *test, 300);
  ASSERT_TRUE(agreement.ok()) << agreement.status();
  EXPECT_GE(agreement->top1_agreement, 0.99);
  EXPECT_GT(agreement->min_cosine, 0.995);  // unfolded: negative
}

TEST(QatModelsTest, RefusesAQuantizedStartPoint) {
  QatOptions o;
  auto m = MakeQatModels(std::string(VITQ_MODELS_DIR) + "/fmnist-deit.w8a8.safetensors", o);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("float checkpoint"), std::string::npos) << m.status();
}

}  // namespace
}  // namespace vitq::training
