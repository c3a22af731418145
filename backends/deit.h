// DeiT / ViT: patch embedding, class (and optional distillation) token, learned position
// embedding, pre-norm transformer blocks, final LayerNorm, linear head(s).
// With a distillation token the logits are the mean of the two heads (timm's inference).
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/attention.h"
#include "backends/layers.h"
#include "backends/model.h"

namespace vitq {

class Deit final : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Create(const ModelConfig& config,
                                                       WeightStore& store,
                                                       const PrecisionPlan& plan);
  std::vector<std::vector<std::string>> DescribeKernels(int64_t batch) const override;

 private:
  struct Block {
    LayerNorm norm1, norm2;
    Linear qkv, proj;
    AttentionCore attn;
    Mlp mlp;
  };

  explicit Deit(ModelConfig config) : Model(std::move(config)) {}
  Tensor Run(const Tensor& images) const override;
  // x: (B·N, C) residual stream, updated in place.
  void RunBlock(const Block& block, float* x, int64_t batch, int64_t tokens) const;

  PatchEmbed patch_embed_;
  Tensor cls_token_;   // (C)
  Tensor dist_token_;  // (C) or empty
  Tensor pos_embed_;   // (N, C), N = prefix tokens + patches
  std::vector<Block> blocks_;
  LayerNorm norm_;
  Linear head_, head_dist_;
};

}  // namespace vitq
