// Cost of one quantization-aware training step (vitq-train qat) and of its parts, on the
// shipped Fashion-MNIST checkpoints. Run from anywhere:
//   build/release/bench/qat_bench --benchmark_min_time=3
// BM_TrainStep/<model>/<recipe>: forward, loss and backward of a batch of 64 (no optimizer
// step), recipe 0 = float, then W4A4: 1 = LSQ (--no-irm --no-dgd --no-distill), 2 = LSQ + IRM,
// 3 = LSQ + DGD, 4 = LSQ + the teacher's labels, 5 = Q-ViT (all three).
// BM_ActQuantizer/<mode>: forward and backward of one activation quantizer on fc2's input of
// fmnist-deit (64 × 51 × 512), mode = ActQuantizerImpl::Mode.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <stdexcept>
#include <string>

#include "training/export.h"
#include "training/qat.h"

namespace vitq::training {
namespace {

constexpr int64_t kBatch = 64;
const char* const kModels[] = {VITQ_MODELS_DIR "/fmnist-deit.safetensors",
                               VITQ_MODELS_DIR "/fmnist-swin.safetensors"};

// Recipes by index, as scripts/qat-table names them.
enum Recipe : int64_t { kFloat, kLsq, kLsqIrm, kLsqDgd, kLsqDistill, kQvit };

QatOptions RecipeOptions(int64_t recipe) {
  QatOptions o;
  o.train.label_smoothing = 0;
  if (recipe != kQvit) {
    o.irm = recipe == kLsqIrm ? Irm::kAffine : Irm::kNone;
    o.dgd = recipe == kLsqDgd;
    o.distill = recipe == kLsqDistill;
  }
  return o;
}

StepLossFn FloatStepLoss(Classifier& model) {
  return [&model](const torch::Tensor& x, const torch::Tensor& y) {
    Logits out = model.Forward(x);
    torch::Tensor loss = torch::nn::functional::cross_entropy(out.logits, y);
    if (out.dist.defined())
      loss = 0.5 * loss + 0.5 * torch::nn::functional::cross_entropy(out.dist, y);
    return StepOutput{loss, out};
  };
}

void BM_TrainStep(benchmark::State& state) {
  torch::set_num_threads(2);
  const std::string checkpoint = kModels[state.range(0)];
  const int64_t recipe = state.range(1);
  const QatOptions o = RecipeOptions(recipe);
  auto models = MakeQatModels(checkpoint, o);
  if (!models.ok()) throw std::runtime_error(std::string(models.status().message()));
  const int64_t size = models->config.img_size;
  const torch::Tensor images = torch::randn({kBatch, models->config.in_chans, size, size});
  const torch::Tensor labels = torch::randint(models->config.num_classes, {kBatch}, torch::kLong);
  Classifier& trained = recipe == kFloat ? *models->teacher : *models->student;
  if (recipe == kFloat)
    for (auto& p : trained.parameters()) p.set_requires_grad(true);
  trained.train();
  const StepLossFn step = recipe == kFloat ? FloatStepLoss(trained) : QatStepLoss(*models, o);
  step(images, labels).loss.backward();  // initialises the activation quantizers
  for (auto _ : state) {
    trained.zero_grad();
    step(images, labels).loss.backward();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_TrainStep)
    ->ArgsProduct({{0, 1}, {kFloat, kLsq, kLsqIrm, kLsqDgd, kLsqDistill, kQvit}})
    ->ArgNames({"model", "recipe"})
    ->Unit(benchmark::kMillisecond);

void BM_ActQuantizer(benchmark::State& state) {
  torch::set_num_threads(2);
  const auto mode = static_cast<ActQuantizerImpl::Mode>(state.range(0));
  ActQuantizer quant(4, mode);
  quant->train();
  const torch::Tensor x = torch::randn({kBatch, 51, 512}).requires_grad_(true);
  quant->forward(x).sum().backward();
  for (auto _ : state) {
    x.mutable_grad().reset();
    quant->zero_grad();
    quant->forward(x).sum().backward();
  }
  state.SetItemsProcessed(state.iterations() * x.numel());
}
BENCHMARK(BM_ActQuantizer)->DenseRange(0, 2)->ArgName("mode")->Unit(benchmark::kMicrosecond);

// DGD forward and backward on fmnist-deit's captures: 6 layers' q and k, (64, 4, 51, 32) each.
void BM_DgdLoss(benchmark::State& state) {
  torch::set_num_threads(2);
  QkCapture student, teacher;
  for (int l = 0; l < 6; ++l) {
    for (auto* capture : {&student, &teacher}) {
      const bool grad = capture == &student;
      capture->q.push_back(torch::randn({kBatch, 4, 51, 32}).requires_grad_(grad));
      capture->k.push_back(torch::randn({kBatch, 4, 51, 32}).requires_grad_(grad));
    }
  }
  for (auto _ : state) DgdLoss(student, teacher, DgdReduction::kMean).backward();
}
BENCHMARK(BM_DgdLoss)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace vitq::training

BENCHMARK_MAIN();
