// What a model needs around its forward pass, shared by the `vitq` CLI and the server: its class
// names and the preprocessing its card asks for.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/model.h"
#include "backends/model_config.h"
#include "preprocessing/image.h"

namespace vitq {

// Class names, one per line (a trailing '\r' is dropped). NOT_FOUND when unreadable.
absl::StatusOr<std::vector<std::string>> ReadLabels(const std::string& path);

// The class names to show for `config`: from `override_path` if given, else the names embedded
// in a quantized artifact, else the card's labels file; empty when there are none.
absl::StatusOr<std::vector<std::string>> ClassNamesFor(const ModelConfig& config,
                                                       const std::string& override_path);

// The evaluation transform of the model card (input size, channels, crop, normalisation), so
// that classify, eval and the server feed a model the numbers it was trained on.
preprocessing::PreprocessOptions PreprocessOptionsFor(const ModelConfig& config);

// The precision most of `model`'s layers run at, e.g. "fp32", "bf16", "w8a8", "w4a4", for labels
// in benchmarks and metrics.
std::string PrecisionSummary(const Model& model);

}  // namespace vitq
