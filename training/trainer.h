// Supervised training of a vitq classifier (DeiT, Swin, or the CNN teacher) on a labeled
// image dataset, with the recipe knobs that matter on small data: AdamW, linear warmup +
// cosine decay per step, label smoothing, gradient clipping, random crop with padding,
// horizontal flip, random erasing, and DeiT hard distillation from a teacher.
//
// Every epoch writes OUT_DIR/checkpoint.pt (model, optimizer, epoch) and a line in
// OUT_DIR/train.log; Train(resume=true) continues from the checkpoint with the same data
// order and augmentation a straight run would have used (RNGs are seeded per epoch).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "preprocessing/dataset.h"
#include "training/nets.h"

namespace vitq::training {

struct TrainOptions {
  int epochs = 30;
  int64_t batch_size = 128;
  double lr = 1e-3;            // peak learning rate (after warmup)
  double min_lr = 1e-5;        // end of the cosine decay
  double warmup_epochs = 2.0;  // linear warmup from 0, in (fractional) epochs
  double weight_decay = 0.05;  // AdamW; not applied to biases, norms, tokens, position tables
  double label_smoothing = 0.1;
  double clip_grad_norm = 1.0;  // 0 disables
  int64_t crop_padding = 2;     // random crop of the image padded by this many zero pixels
  bool hflip = true;
  double erase_prob = 0.0;  // random erasing probability (area 2–20%)
  uint64_t seed = 0;
  int threads = 2;
  std::string out_dir;
  bool resume = false;
  int max_epochs_this_run = 0;  // stop after this many epochs (0: run to `epochs`); resume later
  std::string log_prefix;       // printed before progress lines, e.g. "fmnist-deit"
  int64_t max_steps_per_epoch = 0;  // > 0: end each epoch after this many steps (smoke runs)
};

struct TrainResult {
  double test_top1 = 0;    // after the last epoch
  double wall_time_s = 0;  // this run, plus earlier runs when resumed
  int epochs_done = 0;
  std::vector<double> step_losses;  // training loss of every step of this run
};

// `teacher` (optional) gives hard distillation labels for models with a dist head.
// `mean`/`std` normalise pixels (v/255 − mean)/std, as the model card says.
absl::StatusOr<TrainResult> Train(
    Classifier& model, const data::LabeledImages& train, const data::LabeledImages& test,
    float mean, float std, const TrainOptions& options,
    std::function<torch::Tensor(const torch::Tensor&)> teacher = nullptr);

// The loss of one training step on augmented `images` with `labels`, and the model's logits
// on them (for the running accuracy).
struct StepOutput {
  torch::Tensor loss;
  Logits logits;
};
using StepLossFn =
    std::function<StepOutput(const torch::Tensor& images, const torch::Tensor& labels)>;

// Train() with a caller-defined loss (quantization-aware training, training/qat.h): same
// schedule, augmentation, checkpoints, resume and logs.
absl::StatusOr<TrainResult> TrainWithLoss(Classifier& model, const data::LabeledImages& train,
                                          const data::LabeledImages& test, float mean, float std,
                                          const TrainOptions& options, const StepLossFn& step_loss);

// Top-1 accuracy of `model` on `data` (no augmentation), in [0, 1].
double Evaluate(Classifier& model, const data::LabeledImages& data, float mean, float std,
                int64_t batch_size = 256);

// (B, 1, H, W) float batch of images `indices` of `data`, normalised, without augmentation.
torch::Tensor MakeBatch(const data::LabeledImages& data, const std::vector<int64_t>& indices,
                        float mean, float std);

}  // namespace vitq::training
