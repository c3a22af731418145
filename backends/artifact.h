// Quantized artifacts: one safetensors file that holds a model at a per-layer bit-width
// configuration, self-described by its __metadata__ (docs/FORMAT.md, "Quantized artifacts").
//
//   vitq.format          "vitq-quantized"
//   vitq.format_version  "1"
//   vitq.card            the model card (YAML): architecture and preprocessing
//   vitq.layers          JSON {layer: {precision, weight_bits, act_bits, granularity,
//                               act_scale, act_zero_point}} for every quantized Linear and
//                        {precision, kind: "attention", qkv_bits, probs_bits, q_scale, k_scale,
//                               v_scale[, probs_scale][, qk_norm, qk_norm_eps]} for every
//                        integer attention ("<block>.attn.matmul")
//   vitq.quantization    JSON: method, settings, calibration provenance, tool, accuracy
//   vitq.labels          class names, one per line (optional)
// A quantized layer L stores L.weight_q (U8, rows packed separately: [N, ceil(K·bits/8)]) and
// L.weight_scale (F32 [N]); every other tensor is a float tensor under its timm name.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/model_config.h"
#include "backends/quant_spec.h"
#include "backends/quantize.h"
#include "backends/safetensors.h"

namespace vitq {

inline constexpr char kArtifactFormat[] = "vitq-quantized";
// Version 2 adds the Q-ViT attention fields (probs_scale, qk_norm and its tensors), which a
// version-1 reader would silently misread; files without them are still written as version 1.
inline constexpr int kArtifactVersion = 2;
inline constexpr int kArtifactOldestVersion = 1;

struct ArtifactInfo {
  std::string card_yaml;
  std::map<std::string, QuantSpec> layers;  // integer layers; weight_scales filled by the loader
  std::string quantization_json;            // provenance, as stored
  std::vector<std::string> labels;          // class names (vitq.labels, one per line), may be empty
};

bool IsQuantizedArtifact(const SafetensorsFile& file);

// Parses and validates the metadata (version, JSON, bits, scales, zero points); errors name the
// file and the layer.
absl::StatusOr<ArtifactInfo> ReadArtifactInfo(const SafetensorsFile& file);

// The dequantized float weight of integer layer `layer` in `expected` shape (N, ...), and its
// per-channel scales. Checks dtype and shape of L.weight_q and L.weight_scale and every scale.
absl::StatusOr<Tensor> ReadQuantizedWeight(const SafetensorsFile& file, const std::string& layer,
                                           int bits, const Shape& expected,
                                           std::vector<float>& scales);

// The vitq.layers metadata value for `layers` (the inverse of what ReadArtifactInfo parses).
std::string ArtifactLayersJson(const std::map<std::string, QuantSpec>& layers);

// Adds integer layer `layer`'s weight: L.weight_q (codes packed row by row) and L.weight_scale.
void AddQuantizedWeight(SafetensorsWriter& writer, const std::string& layer,
                        const WeightQuant& weight);

// Sets the artifact metadata: format and version, the model card of `config`, the layers, the
// provenance JSON (method, settings, calibration, source, tool, accuracy) and the class names
// from the card's labels file when it has one.
void SetArtifactMetadata(SafetensorsWriter& writer, const ModelConfig& config,
                         const std::map<std::string, QuantSpec>& layers,
                         const std::string& provenance_json);

// Packs (N, K) codes row by row: [N, ceil(K·bits/8)].
std::vector<uint8_t> PackRows(const std::vector<int8_t>& values, int64_t rows, int64_t cols,
                              int bits);

// The model card of `config` as YAML (round-trips through ParseModelCard).
std::string ModelConfigToYaml(const ModelConfig& config);

}  // namespace vitq
