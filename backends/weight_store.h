// WeightStore: hands the model builder its tensors by canonical (timm) name, whatever
// naming scheme the checkpoint uses, checking each shape and that nothing is left over.
//
// Schemes: timm (DeiT; Swin with downsample at the start of a stage, timm ≥ 0.9),
// timm legacy Swin (downsample at the end of a stage, `head.weight`), torchvision
// (`vit_*`, `swin_t/s/b`). The scheme is detected from the tensor names.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/model_config.h"
#include "backends/quant_spec.h"
#include "backends/safetensors.h"
#include "backends/tensor.h"

namespace vitq {

enum class NamingScheme { kTimm, kTimmLegacySwin, kTorchvision, kRandom };
std::string SchemeName(NamingScheme scheme);

class WeightStore {
 public:
  // Detects the scheme of `file` for `arch`; errors if the names fit no scheme.
  static absl::StatusOr<WeightStore> FromFile(std::shared_ptr<const SafetensorsFile> file,
                                              Arch arch);
  // Random-initialised weights of whatever shape is asked for (benchmarks, tests).
  static WeightStore Random(uint64_t seed);

  // The tensor `canonical` (timm name) with shape `expected`. Errors name the tensor as
  // the file names it, with the expected and found shapes.
  absl::StatusOr<Tensor> Take(const std::string& canonical, const Shape& expected);
  bool Has(const std::string& canonical) const;
  // Fails naming tensors in the file that no layer took (buffers such as
  // relative_position_index and attn_mask are allowed).
  absl::Status CheckAllUsed() const;

  NamingScheme scheme() const { return scheme_; }
  // For a quantized artifact: the integer layers (their weight_scales are filled as their
  // weights are taken). Empty for float checkpoints.
  const std::map<std::string, QuantSpec>& quantized_layers() const { return quantized_layers_; }
  // Elements of all tensors taken so far (the model's parameter count).
  int64_t taken_elements() const { return taken_elements_; }
  // Every tensor taken so far, by canonical name, with its shape (in request order).
  const std::vector<std::pair<std::string, Shape>>& taken_shapes() const { return taken_shapes_; }
  std::string FileName(const std::string& canonical) const { return to_file_(canonical); }

 private:
  NamingScheme scheme_ = NamingScheme::kRandom;
  std::shared_ptr<const SafetensorsFile> file_;
  std::function<std::string(const std::string&)> to_file_;
  std::set<std::string> taken_;  // file names
  uint64_t seed_ = 0;
  uint64_t draws_ = 0;
  int64_t taken_elements_ = 0;
  std::map<std::string, QuantSpec> quantized_layers_;
  std::vector<std::pair<std::string, Shape>> taken_shapes_;
};

}  // namespace vitq
