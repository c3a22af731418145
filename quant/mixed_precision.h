// Liu et al.'s nuclear-norm mixed precision over a model: one bit-width per attention block
// (qkv, proj and the attention matmuls) and per MLP block (fc1, fc2), weights and activations
// alike, minimizing Ω = Σ_blocks σ·‖Ŷ − Y‖² under a size budget, where σ is the nuclear norm
// (sum of singular values, OpenCV's SVD) of the block's attention map or output feature on the
// calibration sample, and ‖Ŷ − Y‖² the mean squared output error of the block's layers with
// max-based quantizers at each candidate bit-width. Other layers (Swin's patch merging) are
// blocks of their own; the patch embedding and heads keep their fixed bits.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/observer.h"
#include "backends/tensor.h"

namespace vitq::quant {

// A Linear's calibration sample: sampled input rows, weight (N, K) and bias.
struct LinearSample {
  std::vector<float> rows;  // (m, k)
  int64_t k = 0;
  float min = 0, max = 0;  // observed input range
  Tensor weight;
  std::vector<float> bias;  // (N) or empty
};

// σ of an attention block: the nuclear norm of its attention map (the paper's), or of its
// output feature like every other block (one scale for all blocks).
enum class Sensitivity { kAttentionMap, kOutput };

struct MixedPrecisionOptions {
  Sensitivity sensitivity = Sensitivity::kAttentionMap;
  std::vector<int> candidate_bits = {3, 4, 5, 6, 7, 8};
  // Activation bits of every block; 0: each block's activations at its weight bits (the paper's
  // one bit-width per block). The size budget counts weights only, so fixing the activations at
  // the uniform configuration's width compares mixed and uniform at equal activation precision.
  int act_bits = 0;
  double avg_bits = 0;        // budget: the blocks' weights at this average, or
  double size_budget_mb = 0;  // the whole artifact's tensor bytes (fixed parts subtracted)
  int64_t fixed_bits = 0;     // bits of everything outside the blocks' weights (size budget)
};

struct BlockChoice {
  std::string block;                // e.g. "blocks.3.attn", "layers.1.blocks.0.mlp"
  std::vector<std::string> layers;  // its layers (Linears and the attention matmul)
  int64_t parameters = 0;
  double sensitivity = 0;
  std::vector<double> error;  // per candidate bit-width
  int bits = 0;               // chosen
  int act_bits = 0;           // its activations: `bits`, unless the options fix them
};

// The block of a layer name ("blocks.0.attn.qkv" → "blocks.0.attn"), or the name itself.
std::string BlockOf(const std::string& layer);

// Nuclear norm of a rows × cols matrix.
double NuclearNorm(const float* m, int64_t rows, int64_t cols);

// Chooses the bits of every block of `linears` (non-edge layers) and `attentions`.
absl::StatusOr<std::vector<BlockChoice>> AssignMixedPrecision(
    const std::map<std::string, LinearSample>& linears,
    const std::map<std::string, const AttentionSample*>& attentions,
    const MixedPrecisionOptions& options);

}  // namespace vitq::quant
