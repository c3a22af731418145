// Post-training quantization with simple calibration (min/max or percentile ranges of every
// Linear layer's input) into a quantized artifact (backends/artifact.h). The paper methods
// (liu2021, Q-ViT export) produce the same artifact with better scales.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "backends/quant_spec.h"
#include "backends/tensor.h"
#include "quant/mixed_precision.h"

namespace vitq::quant {

struct LayerBits {
  int weight_bits = 8;
  int act_bits = 8;
};

// Which bits each Linear layer gets. A layer named in `layers` gets those bits; otherwise the
// patch embedding and the classifier heads get `edge` (8/8 by default, as Q-ViT keeps them),
// every other layer `all`.
struct BitProfile {
  LayerBits all;
  LayerBits edge;
  std::map<std::string, LayerBits> layers;
  LayerBits For(const std::string& layer) const;
};

// Profile YAML:  {default: {wbits: 4, abits: 4}, edge: {wbits: 8, abits: 8},
//                 layers: {blocks.0.mlp.fc1: {wbits: 8, abits: 8}}}
absl::StatusOr<BitProfile> LoadBitProfile(const std::string& path, LayerBits defaults);

struct PtqOptions {
  std::string method = "minmax";  // minmax | percentile | liu2021
  double percentile = 99.99;      // central percent of input values kept (percentile)
  // liu2021 (Liu et al. 2021, quant/liu2021.h): similarity-aware alternating search of every
  // Linear's weight-scale multiplier (on per-channel max-based scales) and activation range
  // multiplier (on the percentile or the observed range), on grids of `search_candidates` over
  // [0.5, 1.2], for at most `search_rounds` alternations, on `search_rows` sampled input rows;
  // then bias correction.
  int search_candidates = 20;
  int search_rounds = 3;
  int64_t search_rows = 256;
  // The activation range the multiplier scales: the `percentile` range (default: each tail
  // clipped by its own density, then refined by the search; better at 8 of 12 model × bit-width
  // cells, worse at 4 by 1–4 test images, docs/RESULTS.md) or the observed [min, max] (the
  // paper's max-based initial step).
  bool search_from_percentile = true;
  bool bias_correction = true;
  // liu2021 attention: q/k steps by similarity minus γ·ranking loss of the scores (γ = 0.1,
  // θ = 0.2, 64 sampled pairs per row), then softmax-output/v steps by output similarity, on the
  // first `attention_matrices` per-head matrices of the calibration set.
  bool ranking = true;
  int64_t attention_matrices = 32;
  // liu2021 mixed precision (quant/mixed_precision.h): per attention / MLP block bits from
  // mixed.candidate_bits under mixed.avg_bits or mixed.size_budget_mb; overrides `bits` there.
  bool mixed_precision = false;
  MixedPrecisionOptions mixed;
  BitProfile bits;
  int64_t batch_size = 64;
  bool quantize_attention = true;  // integer q·kᵀ and softmax·v (q, k, v, softmax output quantized)
  std::string calib_spec;          // provenance: where the calibration images came from
  uint64_t seed = 0;
};

struct PtqResult {
  std::map<std::string, QuantSpec> layers;
  int64_t calib_images = 0;
  std::vector<BlockChoice> mixed_precision;  // the blocks' bits, when chosen
};

// Calibrates the float checkpoint at `model_path` on `calib` (N, C, H, W) and writes the
// artifact to `output`.
absl::StatusOr<PtqResult> QuantizeCheckpoint(const std::string& model_path,
                                             const std::optional<std::string>& arch,
                                             const Tensor& calib, const PtqOptions& options,
                                             const std::string& output);

}  // namespace vitq::quant
