#include "server/model_io.h"

#include <algorithm>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"

namespace vitq {

absl::StatusOr<std::vector<std::string>> ReadLabels(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open labels file"));
  std::vector<std::string> labels;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels.push_back(line);
  }
  return labels;
}

absl::StatusOr<std::vector<std::string>> ClassNamesFor(const ModelConfig& config,
                                                       const std::string& override_path) {
  if (!override_path.empty()) return ReadLabels(override_path);
  if (!config.label_names.empty()) return config.label_names;
  if (!config.labels_path.empty()) return ReadLabels(config.labels_path);
  return std::vector<std::string>();
}

preprocessing::PreprocessOptions PreprocessOptionsFor(const ModelConfig& config) {
  preprocessing::PreprocessOptions options;
  options.image_size = config.img_size;
  options.channels = config.in_chans;
  options.crop_pct = config.preprocess.crop_pct;
  options.mean = config.preprocess.mean;
  options.std = config.preprocess.std;
  options.interpolation = config.preprocess.interpolation;
  return options;
}

std::string PrecisionSummary(const Model& model) {
  std::map<std::string, int> layers_per_precision;
  for (const auto& row : model.DescribeKernels(/*batch=*/1)) ++layers_per_precision[row[1]];
  if (layers_per_precision.empty()) return "fp32";
  return std::max_element(layers_per_precision.begin(), layers_per_precision.end(),
                          [](const auto& a, const auto& b) { return a.second < b.second; })
      ->first;
}

}  // namespace vitq
