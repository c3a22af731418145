#include "tools/cli_common.h"

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vitq::cli {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "vitq: error: %s\n", std::string(status.message()).c_str());
  return 1;
}

void ModelFlags::AddTo(CLI::App* app, bool allow_preset) {
  app->add_option("--model,-m", model,
                  allow_preset
                      ? "model: a safetensors file, or an architecture preset for random weights"
                      : "model: a safetensors file (its card FOO.yaml beside it, or --arch)")
      ->required();
  app->add_option("--arch", arch,
                  "architecture preset for a bare checkpoint without model card (" +
                      absl::StrJoin(PresetNames(), ", ") + ")");
  app->add_option("--precision,-p", precision, "precision of every layer: fp32 or bf16")
      ->check(CLI::IsMember({"fp32", "bf16"}));
}

absl::StatusOr<std::unique_ptr<Model>> LoadFromFlags(const ModelFlags& f, bool allow_preset) {
  absl::StatusOr<Precision> precision = ParsePrecision(f.precision);
  if (!precision.ok()) return precision.status();
  const PrecisionPlan plan = UniformPlan(*precision);
  if (allow_preset && !f.model.ends_with(".safetensors")) {
    absl::StatusOr<ModelConfig> config = PresetConfig(f.model);
    if (!config.ok()) return config.status();
    return RandomModel(*config, /*seed=*/1, plan);
  }
  LoadOptions options;
  if (!f.arch.empty()) options.arch = f.arch;
  options.plan = plan;
  return LoadModel(f.model, options);
}

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

}  // namespace vitq::cli
