// Pieces shared by the `vitq` subcommands: model flags and loading, error exit, label files,
// and the preprocessing a model's card asks for.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backends/model.h"
#include "preprocessing/image.h"

namespace vitq::cli {

// Prints "vitq: error: MESSAGE" on stderr; returns the exit code 1.
int Fail(const absl::Status& status);

// Flags shared by every subcommand that loads a model.
struct ModelFlags {
  std::string model;
  std::string arch;
  std::string precision = "fp32";
  bool fake_quant = false;

  // `allow_preset`: --model may also name an architecture preset (random weights).
  void AddTo(CLI::App* app, bool allow_preset);
};

absl::StatusOr<std::unique_ptr<Model>> LoadFromFlags(const ModelFlags& f, bool allow_preset);

// Class names, one per line (a trailing '\r' is dropped). NOT_FOUND when unreadable.
absl::StatusOr<std::vector<std::string>> ReadLabels(const std::string& path);

// The class names to show for `config`: from `override_path` if given, else the names embedded
// in a quantized artifact, else the card's labels file; empty when there are none.
absl::StatusOr<std::vector<std::string>> ClassNamesFor(const ModelConfig& config,
                                                       const std::string& override_path);

// The evaluation transform of the model card (input size, channels, crop, normalisation), so
// that classify, eval and the server feed a model the numbers it was trained on.
preprocessing::PreprocessOptions PreprocessOptionsFor(const ModelConfig& config);

// Images for calibration or benchmarks, (N, C, S, S) through the card's transform:
// "fashion-mnist:train:N" (any dataset spec, data::LoadDataset) or "random:N" (standard normal).
absl::StatusOr<Tensor> LoadImages(const std::string& spec, const ModelConfig& config,
                                  uint64_t seed);

}  // namespace vitq::cli
