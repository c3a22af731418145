// LibTorch modules for training: DeiT, Swin and a small CNN teacher.
//
// Parameter names are exactly the timm names the engine loads (docs/FORMAT.md), so a trained
// state_dict is exported as-is: patch_embed.proj.weight, blocks.0.attn.qkv.weight,
// layers.1.downsample.reduction.weight, head.fc.weight, ...
// The architecture comes from the same ModelConfig (model card) the engine reads.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

#include "backends/model_config.h"
#include "training/quantizers.h"

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

// A Linear (or, with `patch` > 0, the patch embedding's stride-`patch` Conv2d) whose weight
// and input can be fake-quantized for quantization-aware training. Parameters `weight` and
// `bias` keep nn::Linear / nn::Conv2d names and shapes, so float checkpoints load unchanged.
class QLinearImpl : public torch::nn::Module {
 public:
  QLinearImpl(int64_t in, int64_t out, bool bias, int64_t patch = 0, int64_t in_chans = 0);
  torch::Tensor forward(const torch::Tensor& x);
  // Adds the LSQ weight quantizer (initialised from the current weight) and the LSQ+ input
  // quantizer (initialised by the first training batch).
  void EnableQuantization(int weight_bits, int act_bits);
  bool quantized() const { return !weight_quant.is_empty(); }

  torch::Tensor weight, bias;
  WeightQuantizer weight_quant{nullptr};
  ActQuantizer input_quant{nullptr};

 private:
  int64_t patch_;
};
TORCH_MODULE(QLinear);

// Multi-head attention on packed q|k|v with optional fully quantized matmuls (q, k, v and the
// softmax output) and Q-ViT rectification of q and k.
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t dim, int64_t heads, bool qkv_bias);
  // x: (B, N, C); bias (relative position bias and mask) broadcastable to (B, heads, N, N).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias = {});
  // q, k, v and softmax output quantized to `bits`; `irm` adds that form of the IRM on q and k.
  void EnableQuantization(int bits, Irm irm);
  bool quantized() const { return !q_quant.is_empty(); }
  int64_t heads() const { return heads_; }
  int64_t head_dim() const { return head_dim_; }
  // When set, every forward pass appends its (rectified, quantized) q and k to `sink` (DGD).
  void set_capture(QkCapture* sink) { capture_ = sink; }

  QLinear qkv{nullptr}, proj{nullptr};
  ActQuantizer q_quant{nullptr}, k_quant{nullptr}, v_quant{nullptr}, probs_quant{nullptr};
  Rectifier q_norm{nullptr}, k_norm{nullptr};

 private:
  int64_t heads_, head_dim_;
  QkCapture* capture_ = nullptr;
};
TORCH_MODULE(Attention);

// Bits of one layer in quantization-aware training, by timm layer name ("blocks.0.mlp.fc1",
// "patch_embed.proj", "head"; "<block>.attn.matmul" for the attention, whose act_bits apply to
// q, k, v and the softmax output).
struct QatBits {
  int weight_bits = 4;
  int act_bits = 4;
};

// Turns on fake quantization in every Linear and attention of `model` (after its float
// weights are loaded, before the optimizer is made); `irm` adds that form of the IRM to
// attentions.
void EnableQuantization(Classifier& model, const std::function<QatBits(const std::string&)>& bits,
                        Irm irm);
// Every attention of `model` appends its q and k to `sink` (nullptr: stop).
void SetQkCapture(Classifier& model, QkCapture* sink);

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
