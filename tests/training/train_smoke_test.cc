// A 30-step training run on a tiny DeiT and Swin: the loss goes down, the checkpoint exports,
// the engine loads it and reproduces LibTorch's logits; resume continues from the checkpoint.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <numeric>

#include "backends/model.h"
#include "preprocessing/dataset.h"
#include "training/export.h"
#include "training/nets.h"
#include "training/trainer.h"

namespace vitq::training {
namespace {

namespace fs = std::filesystem;

constexpr char kTinyDeit[] =
    "arch: deit\nimg_size: 28\nin_chans: 1\npatch_size: 7\nembed_dim: 32\ndepth: 1\nnum_heads: 2\n"
    "distilled: true\nnum_classes: 10\npreprocess: {mean: [0.286], std: [0.353], crop_pct: 1.0}\n";
constexpr char kTinySwin[] =
    "arch: swin\nimg_size: 28\nin_chans: 1\npatch_size: 2\nembed_dim: 16\ndepths: [2, "
    "1]\nnum_heads: [1, 2]\n"
    "window_size: 7\nnum_classes: 10\npreprocess: {mean: [0.286], std: [0.353], crop_pct: 1.0}\n";

double Mean(const std::vector<double>& v, size_t begin, size_t end) {
  return std::accumulate(v.begin() + begin, v.begin() + end, 0.0) / (end - begin);
}

class TrainFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("vitq_train_smoke_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    auto train = data::LoadDataset("fashion-mnist:train:1920");  // 30 steps of 64
    auto test = data::LoadDataset("fashion-mnist:test:64");
    ASSERT_TRUE(train.ok() && test.ok()) << train.status() << test.status();
    train_ = std::move(*train);
    test_ = std::move(*test);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
  data::LabeledImages train_, test_;
};

class TrainSmokeTest : public TrainFixture, public ::testing::WithParamInterface<const char*> {};

TEST_P(TrainSmokeTest, LossDecreasesAndEngineMatchesLibTorch) {
  auto config = ParseModelCard(GetParam(), ".");
  ASSERT_TRUE(config.ok()) << config.status();
  auto model = MakeClassifier(*config);
  TrainOptions o;
  o.epochs = 1;
  o.batch_size = 64;
  o.lr = 3e-3;
  o.min_lr = 3e-3;
  o.warmup_epochs = 0.1;
  o.label_smoothing = 0;
  o.out_dir = (dir_ / "run").string();
  auto result = Train(*model, train_, test_, 0.286f, 0.353f, o);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->step_losses.size(), 30u);
  const double first = Mean(result->step_losses, 0, 5), last = Mean(result->step_losses, 25, 30);
  EXPECT_LT(last, first - 0.2) << "loss " << first << " -> " << last;
  EXPECT_TRUE(fs::exists(dir_ / "run" / "checkpoint.pt"));

  const std::string stem = (dir_ / "tiny").string();
  ASSERT_TRUE(ExportCheckpoint(*model, GetParam(), "tiny", "", {{"epochs", "1"}}, stem).ok());
  auto engine = LoadModel(stem + ".safetensors", {});
  ASSERT_TRUE(engine.ok()) << engine.status();

  std::vector<int64_t> idx(test_.count);
  std::iota(idx.begin(), idx.end(), 0);
  torch::Tensor batch = MakeBatch(test_, idx, 0.286f, 0.353f);
  model->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor want = model->Forward(batch).Inference().contiguous();
  Tensor input({test_.count, 1, 28, 28});
  std::memcpy(input.data(), batch.data_ptr<float>(), input.numel() * sizeof(float));
  auto got = (*engine)->Forward(input);
  ASSERT_TRUE(got.ok());
  for (int64_t i = 0; i < got->numel(); ++i)
    ASSERT_NEAR(got->data()[i], want.data_ptr<float>()[i], 1e-4) << i;
}

// Per-epoch seeding and the saved optimizer state make 1 + 1 resumed epochs identical to 2
// straight.
TEST_F(TrainFixture, ResumedRunEqualsStraightRun) {
  auto config = ParseModelCard(kTinyDeit, ".");
  ASSERT_TRUE(config.ok());
  TrainOptions o;
  o.batch_size = 64;
  o.warmup_epochs = 0.5;
  o.epochs = 2;
  o.out_dir = (dir_ / "straight").string();
  torch::manual_seed(0);
  auto straight_model = MakeClassifier(*config);
  auto straight = Train(*straight_model, train_, test_, 0.286f, 0.353f, o);
  ASSERT_TRUE(straight.ok());

  o.out_dir = (dir_ / "resumed").string();
  o.max_epochs_this_run = 1;  // an interrupted run
  torch::manual_seed(0);
  auto fresh = MakeClassifier(*config);  // the same initial weights as the straight run
  auto part1 = Train(*fresh, train_, test_, 0.286f, 0.353f, o);
  ASSERT_TRUE(part1.ok());
  EXPECT_EQ(part1->epochs_done, 1);
  o.max_epochs_this_run = 0;
  o.resume = true;
  auto resumed_model = MakeClassifier(*config);  // different init: the checkpoint overwrites it
  auto resumed = Train(*resumed_model, train_, test_, 0.286f, 0.353f, o);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->epochs_done, 2);
  ASSERT_EQ(resumed->step_losses.size(), 30u);
  ASSERT_EQ(straight->step_losses.size(), 60u);
  for (size_t i = 0; i < 30; ++i)
    EXPECT_NEAR(resumed->step_losses[i], straight->step_losses[30 + i], 1e-4) << i;
}

TEST(TrainErrorsTest, CorruptCheckpointIsAClearError) {
  const fs::path dir =
      fs::temp_directory_path() / ("vitq_train_corrupt_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "checkpoint.pt") << "not a checkpoint";
  auto config = ParseModelCard(kTinyDeit, ".");
  auto model = MakeClassifier(*config);
  auto train = data::LoadDataset("fashion-mnist:train:64");
  ASSERT_TRUE(train.ok());
  TrainOptions o;
  o.out_dir = dir.string();
  o.resume = true;
  auto result = Train(*model, *train, *train, 0.286f, 0.353f, o);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("cannot resume"), std::string::npos) << result.status();
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Archs, TrainSmokeTest, ::testing::Values(kTinyDeit, kTinySwin));

}  // namespace
}  // namespace vitq::training
