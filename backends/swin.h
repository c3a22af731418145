// Swin Transformer (v1): patch embedding + LayerNorm, stages of window-attention blocks
// (relative position bias; every second block uses shifted windows with an attention
// mask), patch merging between stages, final LayerNorm, mean pool, linear head.
//
// Feature maps that are not a multiple of the window are zero-padded after norm1 and
// odd maps before patch merging, as torchvision does; when the window covers the whole
// padded map the shift is dropped.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/attention.h"
#include "backends/layers.h"
#include "backends/model.h"

namespace vitq {

// Geometry helpers, exposed for tests.
namespace swin {
// (N, N) relative position index of a ws×ws window: (Δy + ws−1)·(2ws−1) + (Δx + ws−1).
std::vector<int32_t> RelativePositionIndex(int64_t ws);
// (nW, N, N) additive mask of a padded h×w map with shift (sh, sw): 0 within a region,
// -100 across regions (the value timm and torchvision use).
std::vector<float> ShiftMask(int64_t h, int64_t w, int64_t ws, int64_t sh, int64_t sw);
// For each row of one image's windows (nW·ws·ws), the (H, W) token it holds (y·W + x), or -1 for
// padding: the gather WindowPartition does.
std::vector<int64_t> WindowSourceRows(int64_t h, int64_t w, int64_t ws, int64_t sh, int64_t sw);
// Gathers (B, H, W, C) into windows (B·nW, ws·ws, C) of the zero-padded (Hp, Wp) map rolled
// by (-sh, -sw).
void WindowPartition(const float* x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t ws,
                     int64_t sh, int64_t sw, float* windows);
// The inverse of the partition gather (rows window rows of c channels), adding into x: x's row
// partition.SourceRow(r) += windows' row r; padding rows are dropped.
void WindowReverseAdd(const float* windows, const RowGather& partition, int64_t rows, int64_t c,
                      float* x);
// (B, H, W, C) → (B, ⌈H/2⌉, ⌈W/2⌉, 4C) as [x(2i,2j), x(2i+1,2j), x(2i,2j+1), x(2i+1,2j+1)].
void MergePatches(const float* x, int64_t b, int64_t h, int64_t w, int64_t c, float* out);
}  // namespace swin

class Swin final : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Create(const ModelConfig& config,
                                                       WeightStore& store,
                                                       const PrecisionPlan& plan);
  std::vector<std::vector<std::string>> DescribeKernels(int64_t batch) const override;

 private:
  struct Block {
    std::string name;
    LayerNorm norm1, norm2;
    Linear qkv, proj;
    AttentionCore attn;
    Mlp mlp;
    int64_t shift_h = 0, shift_w = 0;
    std::vector<int64_t> window_source;  // WindowSourceRows of this block's map and shift
    Tensor attn_bias;  // (bias_groups, heads, N, N): relative position bias (+ shift mask)
    int64_t bias_groups = 1;
  };
  struct Merge {
    LayerNorm norm;
    Linear reduction;
  };
  struct Stage {
    std::optional<Merge> downsample;
    std::vector<Block> blocks;
    int64_t dim = 0, height = 0, width = 0;  // of the blocks' feature map
  };

  explicit Swin(ModelConfig config) : Model(std::move(config)) {}
  Tensor Run(const Tensor& images) const override;
  void RunBlock(const Block& block, const Stage& stage, float* x, int64_t batch) const;
  int64_t padded(int64_t n) const;
  int64_t num_windows(const Stage& s) const {
    return padded(s.height) / window_ * (padded(s.width) / window_);
  }

  int64_t window_ = 7;
  PatchEmbed patch_embed_;
  LayerNorm patch_norm_;
  std::vector<Stage> stages_;
  LayerNorm norm_;
  Linear head_;
};

}  // namespace vitq
