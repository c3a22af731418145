// Model: a DeiT or Swin classifier on the vitq engine, and the functions that load one.
//
//   auto model = LoadModel("models/fmnist-deit.safetensors", {});
//   absl::StatusOr<Tensor> logits = (*model)->Forward(images);   // (B, C, H, W) → (B, classes)
//
// Forward is const and may run from several threads at once (each call uses the
// OpenMP threads of its caller).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/model_config.h"
#include "backends/quant_spec.h"
#include "backends/safetensors.h"
#include "backends/tensor.h"
#include "backends/weight_store.h"

namespace vitq {

class Model {
 public:
  virtual ~Model() = default;

  // images: (B, in_chans, img_size, img_size) float32 → logits (B, num_classes).
  // INVALID_ARGUMENT when the shape does not fit the model.
  absl::StatusOr<Tensor> Forward(const Tensor& images) const;

  const ModelConfig& config() const { return config_; }
  int64_t num_parameters() const { return num_parameters_; }
  NamingScheme naming() const { return naming_; }
  // (layer name, precision, oneDNN implementation) for a batch of `batch` images.
  virtual std::vector<std::vector<std::string>> DescribeKernels(int64_t batch) const = 0;

 protected:
  explicit Model(ModelConfig config) : config_(std::move(config)) {}
  virtual Tensor Run(const Tensor& images) const = 0;

  ModelConfig config_;
  int64_t num_parameters_ = 0;
  NamingScheme naming_ = NamingScheme::kRandom;
};

// Builds a model from `store`; fails on any missing, extra or mis-shaped tensor.
absl::StatusOr<std::unique_ptr<Model>> BuildModel(const ModelConfig& config, WeightStore& store,
                                                  const PrecisionPlan& plan);

struct LoadOptions {
  // Architecture preset for a bare checkpoint without a model card (e.g. "swin_small").
  std::optional<std::string> arch;
  PrecisionPlan plan = UniformPlan(Precision::kFp32);
  // Quantized artifacts: run integer layers through the fp32 simulation of their quantizers.
  bool fake_quant = false;
};

// Reads `path` (safetensors) and its architecture: the card beside it (foo.yaml), or
// options.arch. The tensor naming scheme (timm / torchvision) is detected.
absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path,
                                                 const LoadOptions& options);

// Resolves the architecture LoadModel would use for `path`.
absl::StatusOr<ModelConfig> ResolveConfig(const std::string& path,
                                          const std::optional<std::string>& arch);

// Writes the random weights RandomModel(config, seed) would use as a float checkpoint (timm
// names) with its card beside it, e.g. to quantize a standard shape for benchmarks.
absl::Status WriteRandomCheckpoint(const ModelConfig& config, uint64_t seed,
                                   const std::string& path);

// A random-initialised model of a preset's shape (benchmarks).
absl::StatusOr<std::unique_ptr<Model>> RandomModel(const ModelConfig& config, uint64_t seed,
                                                   const PrecisionPlan& plan);

}  // namespace vitq
