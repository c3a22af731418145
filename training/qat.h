// Q-ViT quantization-aware training (Li et al., NeurIPS 2022) and its export as a quantized
// artifact that the engine serves on its integer kernels.
//
//   student  the float checkpoint with every Linear's weight (LSQ, per channel) and input
//            (LSQ+, per tensor) fake-quantized, q, k, v and the softmax output quantized
//            (fully quantized attention), optionally the IRM on q and k;
//   teacher  the same float checkpoint, unquantized;
//   loss     ½·CE(student, y) + ½·CE(student, argmax teacher) + λ·L_DGD
//            (with a distillation head: the class head on y, the distillation head on the
//            teacher's labels; --no-distill: CE on y only; --no-dgd: no L_DGD).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "backends/model_config.h"
#include "training/nets.h"
#include "training/trainer.h"

namespace vitq::training {

struct QatOptions {
  QatBits bits{4, 4};       // every block Linear and attention
  QatBits edge{8, 8};       // patch embedding and classifier heads (Q-ViT keeps them at 8 bits)
  Irm irm = Irm::kAffine;   // IRM on q and k (kNone: off)
  bool dgd = true;          // Distribution-Guided Distillation
  bool distill = true;      // teacher's hard labels in the class loss
  double dgd_weight = 1.0;  // λ
  DgdReduction dgd_reduction = DgdReduction::kMean;
  TrainOptions train;  // schedule, augmentation, checkpoints (train.out_dir), resume
};

// The bits of layer `layer` under `o` (edge layers: patch_embed.proj, head, head_dist, head.fc).
QatBits LayerBitsFor(const QatOptions& o, const std::string& layer);

// A float checkpoint's student (quantization enabled) and teacher.
struct QatModels {
  ModelConfig config;
  std::shared_ptr<Classifier> student, teacher;
};
absl::StatusOr<QatModels> MakeQatModels(const std::string& fp_checkpoint, const QatOptions& o);

// The loss of one Q-ViT training step of `m.student` (the function shares m's models): class
// loss(es), the teacher's labels and DGD as `o` says. What TrainQat minimises; bench/qat_bench
// times it.
StepLossFn QatStepLoss(QatModels& m, const QatOptions& o);

// Trains `m.student` (resumable from o.train.out_dir/checkpoint.pt).
absl::StatusOr<TrainResult> TrainQat(QatModels& m, const data::LabeledImages& train,
                                     const data::LabeledImages& test, const QatOptions& o);

// Writes the student as a quantized artifact (docs/FORMAT.md): integer codes and steps of
// every quantized layer, q/k/v/softmax quantizers, rectification parameters, other tensors as
// float. `provenance_json` goes to vitq.quantization.
absl::Status ExportQatArtifact(Classifier& student, const ModelConfig& config,
                               const std::string& provenance_json, const std::string& output);

// How the served artifact agrees with the LibTorch fake-quant student on `count` images of
// `data` (from the first): top-1 agreement, the engine's and the student's top-1 accuracy.
struct Agreement {
  int64_t images = 0;
  double top1_agreement = 0;
  double engine_top1 = 0, student_top1 = 0;
  double min_cosine = 1;  // smallest logit cosine similarity over the images
};
absl::StatusOr<Agreement> CompareWithEngine(Classifier& student, const ModelConfig& config,
                                            const std::string& artifact,
                                            const data::LabeledImages& data, int64_t count);

}  // namespace vitq::training
