// LibTorch modules for training: DeiT, Swin and a small CNN teacher.
//
// Parameter names are exactly the timm names the engine loads (docs/FORMAT.md), so a trained
// state_dict is exported as-is: patch_embed.proj.weight, blocks.0.attn.qkv.weight,
// layers.1.downsample.reduction.weight, head.fc.weight, ...
// The architecture comes from the same ModelConfig (model card) the engine reads.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "backends/model_config.h"

namespace vitq::training {

// Output of a classifier forward pass. `dist` is set for DeiT with a distillation token
// (the second head's logits); inference uses (logits + dist) / 2 as timm does.
struct Logits {
  torch::Tensor logits;  // (B, classes)
  torch::Tensor dist;    // (B, classes) or undefined
  torch::Tensor Inference() const { return dist.defined() ? (logits + dist) / 2 : logits; }
};

class Classifier : public torch::nn::Module {
 public:
  virtual Logits Forward(const torch::Tensor& images) = 0;  // images: (B, C, H, W)
};

// Builds DeiT or Swin for `config`, initialised as timm does (trunc-normal 0.02 weights, zero
// biases, unit LayerNorm). INVALID_ARGUMENT (as std::invalid_argument) for unsupported shapes.
std::shared_ptr<Classifier> MakeClassifier(const ModelConfig& config);

// Small VGG-style CNN (3 stages of two 3×3 conv + BatchNorm + ReLU, 32/64/128 channels,
// global average pool, linear): the DeiT distillation teacher. CNNs learn Fashion-MNIST fast
// (~93% in a few epochs), which is what a teacher needs.
class TeacherCnnImpl : public torch::nn::Module {
 public:
  TeacherCnnImpl(int64_t in_chans, int64_t num_classes);
  torch::Tensor forward(const torch::Tensor& images);  // (B, C, H, W) → (B, classes)

 private:
  torch::nn::Sequential features_{nullptr};
  torch::nn::Linear fc_{nullptr};
};
TORCH_MODULE(TeacherCnn);

}  // namespace vitq::training
