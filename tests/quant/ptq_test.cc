// vitq quantize's library: calibration → artifact → load, the integer path against its fake-quant
// oracle at every bit width, and the artifact loader's rejection of corrupt files.
#include "quant/ptq.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "backends/artifact.h"
#include "backends/model.h"

namespace vitq {
namespace {

namespace fs = std::filesystem;

constexpr char kDeit[] =
    "arch: deit\nimg_size: 28\nin_chans: 1\npatch_size: 4\nembed_dim: 64\ndepth: 2\nnum_heads: 2\n"
    "distilled: true\nnum_classes: 10\npreprocess: {mean: [0.5], std: [0.5]}\n";
constexpr char kSwin[] =
    "arch: swin\nimg_size: 28\nin_chans: 1\npatch_size: 2\nembed_dim: 32\ndepths: [2, "
    "2]\nnum_heads: [2, 4]\n"
    "window_size: 7\nnum_classes: 10\npreprocess: {mean: [0.5], std: [0.5]}\n";

Tensor Images(int64_t n, uint32_t seed) {
  Tensor t({n, 1, 28, 28});
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (float& v : t.span()) v = d(rng);
  return t;
}

double Cosine(const Tensor& a, const Tensor& b, int64_t row, int64_t cols) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t j = 0; j < cols; ++j) {
    const double x = a.data()[row * cols + j], y = b.data()[row * cols + j];
    ab += x * y, aa += x * x, bb += y * y;
  }
  return ab / std::sqrt(aa * bb);
}

class PtqTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("vitq_ptq_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string FloatCheckpoint(const char* card, const std::string& stem) {
    auto config = ParseModelCard(card, dir_.string());
    EXPECT_TRUE(config.ok());
    const std::string path = (dir_ / (stem + ".safetensors")).string();
    EXPECT_TRUE(WriteRandomCheckpoint(*config, 3, path).ok());
    return path;
  }

  fs::path dir_;
};

struct Bits {
  int w, a;
};

TEST_F(PtqTest, IntegerPathMatchesFakeQuantAtEveryBitWidth) {
  for (const char* card : {kDeit, kSwin}) {
    const std::string fp = FloatCheckpoint(card, "fp");
    for (Bits b : {Bits{8, 8}, Bits{6, 6}, Bits{4, 8}, Bits{4, 4}, Bits{3, 3}, Bits{2, 2}}) {
      quant::PtqOptions o;
      o.bits.all = {b.w, b.a};
      const std::string out = (dir_ / "q.safetensors").string();
      auto result = quant::QuantizeCheckpoint(fp, std::nullopt, Images(32, 1), o, out);
      ASSERT_TRUE(result.ok()) << result.status();
      LoadOptions integer_opts, fake_opts;
      fake_opts.fake_quant = true;
      auto integer = LoadModel(out, integer_opts);
      auto fake = LoadModel(out, fake_opts);
      ASSERT_TRUE(integer.ok() && fake.ok()) << integer.status() << fake.status();
      const Tensor x = Images(16, 2);
      auto yi = (*integer)->Forward(x);
      auto yf = (*fake)->Forward(x);
      ASSERT_TRUE(yi.ok() && yf.ok());
      for (int64_t r = 0; r < 16; ++r) {
        EXPECT_GE(Cosine(*yi, *yf, r, 10), 0.999)
            << "w" << b.w << "a" << b.a << " image " << r << "\n"
            << card;
      }
    }
  }
}

TEST_F(PtqTest, W8A8StaysCloseToFloat) {
  const std::string fp = FloatCheckpoint(kDeit, "fp");
  quant::PtqOptions o;
  const std::string out = (dir_ / "w8a8.safetensors").string();
  ASSERT_TRUE(quant::QuantizeCheckpoint(fp, std::nullopt, Images(64, 1), o, out).ok());
  auto q = LoadModel(out, {});
  auto f = LoadModel(fp, {});
  ASSERT_TRUE(q.ok() && f.ok());
  const Tensor x = Images(8, 2);
  auto yq = (*q)->Forward(x);
  auto yf = (*f)->Forward(x);
  for (int64_t r = 0; r < 8; ++r) EXPECT_GE(Cosine(*yq, *yf, r, 10), 0.99) << r;
}

TEST_F(PtqTest, ArtifactDescribesItself) {
  const std::string fp = FloatCheckpoint(kSwin, "fp");
  quant::PtqOptions o;
  o.bits.all = {4, 4};
  o.method = "percentile";
  o.calib_spec = "random:16";
  const std::string out = (dir_ / "w4a4.safetensors").string();
  auto result = quant::QuantizeCheckpoint(fp, std::nullopt, Images(16, 1), o, out);
  ASSERT_TRUE(result.ok()) << result.status();
  auto file = SafetensorsFile::Open(out);
  ASSERT_TRUE(file.ok());
  auto info = ReadArtifactInfo(**file);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->layers.size(), result->layers.size());
  EXPECT_EQ(info->layers.at("layers.0.blocks.0.attn.qkv").weight_bits, 4);
  EXPECT_EQ(info->layers.at("patch_embed.proj").weight_bits, 8);  // edge layers stay at 8 bits
  EXPECT_EQ(info->layers.at("head.fc").act.bits, 8);
  EXPECT_EQ(info->layers.at("layers.1.downsample.reduction").act.bits, 4);
  for (const auto& [layer, spec] : result->layers) {
    EXPECT_FLOAT_EQ(info->layers.at(layer).act.scale, spec.act.scale) << layer;
    EXPECT_EQ(info->layers.at(layer).act.zero_point, spec.act.zero_point) << layer;
  }
  const QuantSpec& attn = info->layers.at("layers.1.blocks.0.attn.matmul");
  EXPECT_TRUE(attn.is_attention);
  EXPECT_EQ(attn.attn.qkv_bits, 4);
  EXPECT_GT(attn.attn.q_scale, 0);
  EXPECT_NE(info->quantization_json.find("\"method\":\"percentile\""), std::string::npos);
  EXPECT_NE(info->quantization_json.find("random:16"), std::string::npos);
  // 4-bit weights take half the bytes of 8-bit ones: [N, K/2].
  auto q = (*file)->Get("layers.0.blocks.0.mlp.fc1.weight_q");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->shape, (Shape{128, 16}));
  EXPECT_FALSE((*file)->Has("layers.0.blocks.0.mlp.fc1.weight"));
}

// Rewrites `src` with `edit` applied to its metadata and tensors.
std::string Rewrite(const std::string& src, const std::string& dst,
                    const std::function<void(std::map<std::string, std::string>&,
                                             std::map<std::string, TensorView>&)>& edit) {
  auto file = SafetensorsFile::Open(src);
  std::map<std::string, std::string> md = (*file)->metadata();
  std::map<std::string, TensorView> tensors;
  for (const auto& n : (*file)->Names()) tensors[n] = *(*file)->Get(n);
  edit(md, tensors);
  SafetensorsWriter w;
  for (const auto& [k, v] : md) w.SetMetadata(k, v);
  for (const auto& [n, t] : tensors) w.Add(n, t.dtype, t.shape, t.bytes);
  EXPECT_TRUE(w.WriteFile(dst).ok());
  return dst;
}

TEST_F(PtqTest, CorruptArtifactsAreRejectedNamingTheLayer) {
  const std::string fp = FloatCheckpoint(kDeit, "fp");
  const std::string good = (dir_ / "good.safetensors").string();
  ASSERT_TRUE(
      quant::QuantizeCheckpoint(fp, std::nullopt, Images(16, 1), quant::PtqOptions{}, good).ok());
  const std::string bad = (dir_ / "bad.safetensors").string();
  auto expect = [&](const std::string& phrase) {
    auto m = LoadModel(bad, {});
    ASSERT_FALSE(m.ok()) << phrase;
    EXPECT_NE(m.status().message().find(phrase), std::string::npos) << m.status();
  };
  using Md = std::map<std::string, std::string>;
  using Ts = std::map<std::string, TensorView>;
  auto edit_layers = [](const std::string& from, const std::string& to) {
    return [from, to](Md& md, Ts&) {
      std::string& j = md["vitq.layers"];
      j.replace(j.find(from), from.size(), to);
    };
  };
  Rewrite(good, bad, [](Md& md, Ts&) { md["vitq.format_version"] = "7"; });
  expect("unsupported artifact version '7'");
  Rewrite(good, bad, [](Md& md, Ts&) { md["vitq.layers"] = "{not json"; });
  expect("vitq.layers is not a valid JSON object");
  Rewrite(good, bad, edit_layers("\"weight_bits\":8", "\"weight_bits\":9"));
  expect("weight bits must be in [2, 8]");
  Rewrite(good, bad, edit_layers("\"act_scale\":", "\"act_scale\":-"));
  expect("activation scale must be positive");
  Rewrite(good, bad, [](Md& md, Ts&) { md.erase("vitq.card"); });
  expect("lacks vitq.card");
  Rewrite(good, bad, edit_layers("\"q_scale\":", "\"q_scale\":-"));
  expect("attention q/k/v scale must be positive");
  Rewrite(good, bad, [](Md&, Ts& t) { t.erase("blocks.1.mlp.fc2.weight_scale"); });
  expect("layer 'blocks.1.mlp.fc2': missing weight_q or weight_scale");
  Rewrite(good, bad, [](Md&, Ts& t) {
    TensorView& v = t.at("blocks.0.attn.qkv.weight_q");
    v.shape = {v.shape[0] / 2, v.shape[1]};
    v.bytes = v.bytes.subspan(0, v.bytes.size() / 2);
  });
  expect("layer 'blocks.0.attn.qkv': weight_q must be U8 [192, 64]");
  static const float zero_scales[64] = {};
  Rewrite(good, bad, [](Md&, Ts& t) {
    t.at("blocks.0.attn.proj.weight_scale").bytes = {reinterpret_cast<const uint8_t*>(zero_scales),
                                                     256};
  });
  expect("layer 'blocks.0.attn.proj': weight_scale[0] = 0 is not positive");
  Rewrite(good, bad, [](Md&, Ts& t) { t.at("blocks.0.attn.proj.weight_q").dtype = DType::kI8; });
  expect("weight_q must be U8");
  // Q-ViT fields: a rectified attention needs its eps and its four tensors; a learned softmax
  // scale must be positive; rectification tensors without the flag are unexpected.
  Rewrite(good, bad, edit_layers("\"q_scale\":", "\"qk_norm\":true,\"qk_norm_eps\":1e-5,\"q_scale\":"));
  expect("missing tensor 'blocks.0.attn.q_norm.weight' (expected shape [2, 32])");
  Rewrite(good, bad, edit_layers("\"q_scale\":", "\"qk_norm\":true,\"q_scale\":"));
  expect("'qk_norm' needs the number 'qk_norm_eps'");
  Rewrite(good, bad, edit_layers("\"q_scale\":", "\"probs_scale\":-0.1,\"q_scale\":"));
  expect("'probs_scale' must be a positive number");
  static const std::vector<float> ones(64, 1.0f);
  Rewrite(good, bad, [](Md&, Ts& t) {
    t["blocks.0.attn.q_norm.weight"] =
        TensorView{"blocks.0.attn.q_norm.weight", DType::kF32, {2, 32},
                   {reinterpret_cast<const uint8_t*>(ones.data()), ones.size() * sizeof(float)}};
  });
  expect("blocks.0.attn.q_norm.weight");
  // Truncation is caught by the safetensors reader.
  fs::copy_file(good, bad, fs::copy_options::overwrite_existing);
  fs::resize_file(bad, fs::file_size(good) - 100);
  expect("outside the");
}

TEST_F(PtqTest, ArtifactCarriesTheClassNames) {
  std::ofstream(dir_ / "labels.txt")
      << "zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n";
  const std::string card = std::string(kDeit) + "labels: labels.txt\n";
  const std::string fp = FloatCheckpoint(card.c_str(), "fp");
  std::ofstream(dir_ / "fp.yaml") << card;  // WriteRandomCheckpoint's card has no labels
  const std::string out = (dir_ / "q.safetensors").string();
  ASSERT_TRUE(
      quant::QuantizeCheckpoint(fp, std::nullopt, Images(8, 1), quant::PtqOptions{}, out).ok());
  fs::remove(dir_ / "labels.txt");  // the artifact must not need the file any more
  auto config = ResolveConfig(out, std::nullopt);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->label_names.size(), 10u);
  EXPECT_EQ(config->label_names[3], "three");
}

TEST_F(PtqTest, QuantizingAnArtifactAgainIsAnError) {
  const std::string fp = FloatCheckpoint(kDeit, "fp");
  const std::string q = (dir_ / "q.safetensors").string();
  ASSERT_TRUE(
      quant::QuantizeCheckpoint(fp, std::nullopt, Images(8, 1), quant::PtqOptions{}, q).ok());
  auto again =
      quant::QuantizeCheckpoint(q, std::nullopt, Images(8, 1), quant::PtqOptions{}, q + "2");
  EXPECT_NE(again.status().message().find("already quantized"), std::string::npos)
      << again.status();
}

}  // namespace
}  // namespace vitq
