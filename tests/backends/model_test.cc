#include "backends/model.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

namespace vitq {
namespace {

namespace fs = std::filesystem;

constexpr char kDeitCard[] =
    "arch: deit\nimg_size: 16\nin_chans: 3\npatch_size: 4\nembed_dim: 32\ndepth: 2\nnum_heads: 2\n"
    "num_classes: 5\n";
constexpr char kSwinCard[] =
    "arch: swin\nimg_size: 28\nin_chans: 1\npatch_size: 2\nembed_dim: 16\ndepths: [2, 2]\n"
    "num_heads: [2, 4]\nwindow_size: 7\nnum_classes: 10\npreprocess: {mean: [0.5], std: [0.5]}\n";

class ModelFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("vitq_model_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // The tensors a model of `card` needs (canonical names and shapes), with random values.
  std::map<std::string, Tensor> TensorsFor(const std::string& card) {
    auto config = ParseModelCard(card, dir_.string());
    EXPECT_TRUE(config.ok()) << config.status();
    WeightStore recorder = WeightStore::Random(1);
    EXPECT_TRUE(BuildModel(*config, recorder, UniformPlan(Precision::kFp32)).ok());
    std::map<std::string, Tensor> tensors;
    std::mt19937 rng(5);
    std::normal_distribution<float> n(0.0f, 0.05f);
    for (const auto& [name, shape] : recorder.taken_shapes()) {
      Tensor t(shape);
      for (float& v : t.span())
        v = n(rng) + (name.find("norm") != std::string::npos && name.ends_with(".weight") ? 1 : 0);
      tensors.emplace(name, std::move(t));
    }
    return tensors;
  }

  std::string Write(const std::string& stem, const std::map<std::string, Tensor>& tensors,
                    const std::string& card) {
    SafetensorsWriter w;
    for (const auto& [name, t] : tensors) w.AddFloat(name, t);
    const std::string path = (dir_ / (stem + ".safetensors")).string();
    EXPECT_TRUE(w.WriteFile(path).ok());
    if (!card.empty()) std::ofstream(dir_ / (stem + ".yaml")) << card;
    return path;
  }

  static void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& phrase) {
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_NE(s.message().find(phrase), std::string::npos) << "message: " << s.message();
  }

  fs::path dir_;
};

Tensor RandomImages(int64_t b, int64_t c, int64_t s, uint32_t seed) {
  Tensor t({b, c, s, s});
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (float& v : t.span()) v = u(rng);
  return t;
}

TEST_F(ModelFileTest, LoadsWithCardAndBatchEqualsSingleImages) {
  for (const char* card : {kDeitCard, kSwinCard}) {
    const std::string path = Write("m", TensorsFor(card), card);
    auto model = LoadModel(path, {});
    ASSERT_TRUE(model.ok()) << model.status();
    const ModelConfig& c = (*model)->config();
    Tensor batch = RandomImages(3, c.in_chans, c.img_size, 1);
    auto logits = (*model)->Forward(batch);
    ASSERT_TRUE(logits.ok());
    ASSERT_EQ(logits->shape(), (Shape{3, c.num_classes}));
    const int64_t per_image = c.in_chans * c.img_size * c.img_size;
    for (int64_t n = 0; n < 3; ++n) {
      Tensor one({1, c.in_chans, c.img_size, c.img_size});
      std::copy(batch.data() + n * per_image, batch.data() + (n + 1) * per_image, one.data());
      auto single = (*model)->Forward(one);
      for (int64_t k = 0; k < c.num_classes; ++k) {
        ASSERT_NEAR(single->data()[k], logits->data()[n * c.num_classes + k], 1e-5)
            << ArchName(c.arch);
      }
    }
  }
}

TEST_F(ModelFileTest, MissingTensorNamesItAndItsShape) {
  auto tensors = TensorsFor(kDeitCard);
  tensors.erase("blocks.1.mlp.fc2.weight");
  auto model = LoadModel(Write("m", tensors, kDeitCard), {});
  ExpectError(model.status(), absl::StatusCode::kNotFound,
              "missing tensor 'blocks.1.mlp.fc2.weight' (expected shape [32, 128])");
}

TEST_F(ModelFileTest, ExtraTensorIsAnError) {
  auto tensors = TensorsFor(kDeitCard);
  tensors.emplace("blocks.7.attn.qkv.weight", Tensor::Zeros({3, 3}));
  ExpectError(
      LoadModel(Write("m", tensors, kDeitCard), {}).status(), absl::StatusCode::kInvalidArgument,
      "unexpected tensor(s) for this architecture (timm names): 'blocks.7.attn.qkv.weight'");
}

TEST_F(ModelFileTest, MisShapedTensorGivesExpectedAndFound) {
  auto tensors = TensorsFor(kSwinCard);
  tensors["layers.1.blocks.0.attn.qkv.weight"] = Tensor::Zeros({96, 16});
  ExpectError(LoadModel(Write("m", tensors, kSwinCard), {}).status(),
              absl::StatusCode::kInvalidArgument,
              "tensor 'layers.1.blocks.0.attn.qkv.weight' has shape [96, 16], expected [96, 32]");
}

TEST_F(ModelFileTest, WrongDtypeIsAnError) {
  auto tensors = TensorsFor(kDeitCard);
  SafetensorsWriter w;
  for (const auto& [name, t] : tensors) {
    if (name == "head.bias") {
      std::vector<uint8_t> bytes(t.numel() * 4, 0);
      w.Add(name, DType::kI32, t.shape(), bytes);
    } else {
      w.AddFloat(name, t);
    }
  }
  const std::string path = (dir_ / "int.safetensors").string();
  ASSERT_TRUE(w.WriteFile(path).ok());
  std::ofstream(dir_ / "int.yaml") << kDeitCard;
  ExpectError(LoadModel(path, {}).status(), absl::StatusCode::kInvalidArgument,
              "'head.bias' has dtype I32");
}

TEST_F(ModelFileTest, NoCardNeedsArch) {
  const std::string path = Write("bare", TensorsFor(kDeitCard), "");
  ExpectError(LoadModel(path, {}).status(), absl::StatusCode::kInvalidArgument,
              "pass --arch PRESET");
  LoadOptions options;
  options.arch = "deit_small";  // wrong shapes for this file
  ExpectError(LoadModel(path, options).status(), absl::StatusCode::kInvalidArgument,
              "expected [384, 3, 16, 16]");
}

TEST_F(ModelFileTest, SwinNamesUnderDeitCardAreRejected) {
  const std::string path = Write("swin", TensorsFor(kSwinCard), kDeitCard);
  ExpectError(LoadModel(path, {}).status(), absl::StatusCode::kInvalidArgument,
              "tensor names are Swin's");
}

TEST_F(ModelFileTest, WrongInputShapeIsInvalidArgument) {
  auto model = LoadModel(Write("m", TensorsFor(kDeitCard), kDeitCard), {});
  ASSERT_TRUE(model.ok());
  ExpectError((*model)->Forward(RandomImages(2, 3, 32, 1)).status(),
              absl::StatusCode::kInvalidArgument, "expects [N, 3, 16, 16]");
  ExpectError((*model)->Forward(Tensor({3, 16, 16})).status(), absl::StatusCode::kInvalidArgument,
              "expects");
}

TEST(ModelPlanTest, IntegerAttentionWithoutQuantizersIsRejected) {
  auto config = ParseModelCard(kDeitCard, ".");
  ASSERT_TRUE(config.ok());
  WeightStore store = WeightStore::Random(1);
  const PrecisionPlan plan = [](const std::string& layer) {
    QuantSpec s;
    s.precision = Precision::kInt8;
    s.act = ActQuantFromRange(-1, 1, 8);
    return layer.ends_with("attn.matmul") ? s : QuantSpec::Float(Precision::kFp32);
  };
  auto model = BuildModel(*config, store, plan);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find(
                "blocks.0.attn.matmul: an integer attention needs q/k/v quantizers"),
            std::string::npos)
      << model.status();
}

TEST(ModelCardTest, RejectsInvalidCards) {
  EXPECT_NE(ParseModelCard("arch: resnet\n", ".")
                .status()
                .message()
                .find("arch must be 'deit' or 'swin'"),
            std::string::npos);
  EXPECT_NE(ParseModelCard("arch: deit\nembed_dim: 100\nnum_heads: 3\n", ".")
                .status()
                .message()
                .find("not divisible by num_heads"),
            std::string::npos);
  EXPECT_NE(ParseModelCard("arch: deit\nimg_size: 30\npatch_size: 4\n", ".")
                .status()
                .message()
                .find("not a multiple of patch_size"),
            std::string::npos);
  EXPECT_NE(ParseModelCard("arch: [deit\n", ".").status().message().find("not valid YAML"),
            std::string::npos);
  EXPECT_NE(
      ParseModelCard("arch: deit\nin_chans: 1\n", ".").status().message().find("mean/std need 1"),
      std::string::npos);
  EXPECT_NE(ParseModelCard("arch: swin\ndepths: [2]\nnum_heads: [1, 2]\n", ".")
                .status()
                .message()
                .find("same length"),
            std::string::npos);
  EXPECT_NE(ParseModelCard("arch: deit\ndepth: two\n", ".").status().message().find("'depth'"),
            std::string::npos);
}

TEST(ModelCardTest, PresetsMatchPublishedParameterCounts) {
  // timm: deit_small_patch16_224 22.05M, deit_tiny 5.72M, swin_tiny_patch4_window7_224 28.29M.
  for (const auto& [name, params] : std::vector<std::pair<std::string, int64_t>>{
           {"deit_tiny", 5717416}, {"deit_small", 22050664}, {"swin_tiny", 28288354}}) {
    auto config = PresetConfig(name);
    ASSERT_TRUE(config.ok());
    WeightStore store = WeightStore::Random(1);
    auto model = BuildModel(*config, store, UniformPlan(Precision::kFp32));
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ((*model)->num_parameters(), params) << name;
  }
  EXPECT_EQ(PresetConfig("resnet50").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(PresetConfig("swin_t").ok());
}

}  // namespace
}  // namespace vitq
