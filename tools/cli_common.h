// Pieces shared by the `vitq` subcommands: model flags and loading, error exit, and images for
// calibration and benchmarks (labels and preprocessing come from server/model_io.h).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backends/model.h"
#include "preprocessing/image.h"
#include "server/model_io.h"  // ReadLabels, ClassNamesFor, PreprocessOptionsFor

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

// Images for calibration or benchmarks, (N, C, S, S) through the card's transform:
// "fashion-mnist:train:N" (any dataset spec, data::LoadDataset) or "random:N" (standard normal).
absl::StatusOr<Tensor> LoadImages(const std::string& spec, const ModelConfig& config,
                                  uint64_t seed);

}  // namespace vitq::cli
