// ModelConfig: the architecture of a DeiT or Swin model, from a preset name or from the
// model card (YAML) that sits beside a checkpoint.
//
// Model card (foo.safetensors → foo.yaml), fields and defaults:
//   arch: deit | swin              (required)
//   img_size: 224  in_chans: 3  patch_size: 16 (deit) / 4 (swin)  num_classes: 1000
//   embed_dim: 384                 (deit: width; swin: width of stage 0)
//   mlp_ratio: 4.0  qkv_bias: true  layer_norm_eps: 1e-6 (deit) / 1e-5 (swin)
//   deit:  depth: 12, num_heads: 6, distilled: false
//   swin:  depths: [2, 2, 6, 2], num_heads: [3, 6, 12, 24], window_size: 7
//   preprocess: {mean: [...], std: [...], crop_pct: 0.875, interpolation: bicubic}
//   labels: path to a class-name file, one per line (relative to the card)
// Other keys (training provenance, accuracy) are kept as text and shown by `vitq info`.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace vitq {

enum class Arch { kDeit, kSwin };
std::string ArchName(Arch arch);

struct PreprocessConfig {
  std::vector<float> mean = {0.485f, 0.456f, 0.406f};  // ImageNet, per channel
  std::vector<float> std = {0.229f, 0.224f, 0.225f};
  float crop_pct = 0.875f;  // resize shorter side to img_size / crop_pct, then center crop
  std::string interpolation = "bicubic";
};

struct ModelConfig {
  Arch arch = Arch::kDeit;
  std::string name;
  int64_t img_size = 224;
  int64_t in_chans = 3;
  int64_t patch_size = 16;
  int64_t embed_dim = 384;
  int64_t num_classes = 1000;
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  float layer_norm_eps = 1e-6f;
  // DeiT
  int64_t depth = 12;
  int64_t num_heads = 6;
  bool distilled = false;
  // Swin: one entry per stage
  std::vector<int64_t> depths;
  std::vector<int64_t> stage_heads;
  int64_t window_size = 7;

  PreprocessConfig preprocess;
  std::string labels_path;                   // resolved against the card's folder
  std::vector<std::string> label_names;      // embedded class names (quantized artifacts)
  std::map<std::string, std::string> extra;  // other card keys, as YAML text

  int64_t mlp_hidden(int64_t dim) const { return static_cast<int64_t>(dim * mlp_ratio); }
  int64_t num_prefix_tokens() const { return distilled ? 2 : 1; }
};

// Checks internal consistency (divisibility, positive sizes); errors say which field.
absl::Status ValidateConfig(const ModelConfig& config);

// Standard shapes: deit_{tiny,small,base}[_distilled], swin_{tiny,small,base}
// (timm's *_patch16_224 / *_patch4_window7_224 names and torchvision's vit_b_16,
// swin_t/s/b are accepted too).
absl::StatusOr<ModelConfig> PresetConfig(const std::string& name);
std::vector<std::string> PresetNames();

absl::StatusOr<ModelConfig> ParseModelCard(const std::string& yaml_text,
                                           const std::string& card_dir);
absl::StatusOr<ModelConfig> LoadModelCard(const std::string& path);

// "dir/foo.safetensors" → "dir/foo.yaml".
std::string CardPathFor(const std::string& weights_path);

}  // namespace vitq
