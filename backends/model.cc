#include "backends/model.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "backends/artifact.h"
#include "backends/deit.h"
#include "backends/status_macros.h"
#include "backends/swin.h"

namespace vitq {

absl::StatusOr<Tensor> Model::Forward(const Tensor& images) const {
  const ModelConfig& c = config_;
  const Shape want = {images.rank() > 0 ? images.dim(0) : 0, c.in_chans, c.img_size, c.img_size};
  if (images.rank() != 4 || images.shape() != want || images.dim(0) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input has shape ", ShapeToString(images.shape()), ", model '", c.name, "' expects [N, ",
        c.in_chans, ", ", c.img_size, ", ", c.img_size, "] with N >= 1"));
  }
  return Run(images);
}

absl::StatusOr<std::unique_ptr<Model>> BuildModel(const ModelConfig& config, WeightStore& store,
                                                  const PrecisionPlan& plan) {
  VITQ_RETURN_IF_ERROR(ValidateConfig(config));
  std::unique_ptr<Model> model;
  if (config.arch == Arch::kDeit) {
    VITQ_ASSIGN_OR_RETURN(model, Deit::Create(config, store, plan));
  } else {
    VITQ_ASSIGN_OR_RETURN(model, Swin::Create(config, store, plan));
  }
  VITQ_RETURN_IF_ERROR(store.CheckAllUsed());
  return model;
}

absl::StatusOr<ModelConfig> ResolveConfig(const std::string& path,
                                          const std::optional<std::string>& arch) {
  if (arch) return PresetConfig(*arch);
  auto file = SafetensorsFile::Open(path);  // a corrupt file's error beats "no model card"
  if (!file.ok()) return file.status();
  if (IsQuantizedArtifact(**file)) {
    auto info = ReadArtifactInfo(**file);
    if (!info.ok()) return info.status();
    auto config =
        ParseModelCard(info->card_yaml, std::filesystem::path(path).parent_path().string());
    if (!config.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": vitq.card: ", config.status().message()));
    }
    config->label_names = info->labels;
    return config;
  }
  const std::string card = CardPathFor(path);
  if (!std::filesystem::exists(card)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no model card at ", card,
                                                   "; pass --arch PRESET for a bare checkpoint"));
  }
  return LoadModelCard(card);
}

absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path,
                                                 const LoadOptions& options) {
  VITQ_ASSIGN_OR_RETURN(ModelConfig config, ResolveConfig(path, options.arch));
  VITQ_ASSIGN_OR_RETURN(std::shared_ptr<const SafetensorsFile> file, SafetensorsFile::Open(path));
  VITQ_ASSIGN_OR_RETURN(WeightStore store, WeightStore::FromFile(file, config.arch));
  if (store.quantized_layers().empty()) return BuildModel(config, store, options.plan);
  // A quantized artifact: its integer layers as stored (scales read with their weights), the
  // other layers as options.plan says.
  const PrecisionPlan artifact_plan = [&store, base = options.plan,
                                       fq = options.fake_quant](const std::string& layer) {
    auto it = store.quantized_layers().find(layer);
    if (it == store.quantized_layers().end()) return base(layer);
    QuantSpec spec = it->second;
    spec.fake_quant = fq;
    return spec;
  };
  return BuildModel(config, store, artifact_plan);
}

absl::Status WriteRandomCheckpoint(const ModelConfig& config, uint64_t seed,
                                   const std::string& path) {
  WeightStore shapes = WeightStore::Random(seed);
  VITQ_RETURN_IF_ERROR(BuildModel(config, shapes, UniformPlan(Precision::kFp32)).status());
  WeightStore values = WeightStore::Random(seed);  // the same draws, in the same order
  SafetensorsWriter writer;
  for (const auto& [name, shape] : shapes.taken_shapes()) {
    VITQ_ASSIGN_OR_RETURN(Tensor t, values.Take(name, shape));
    writer.AddFloat(name, t);
  }
  VITQ_RETURN_IF_ERROR(writer.WriteFile(path));
  std::ofstream card(CardPathFor(path));
  card << ModelConfigToYaml(config) << "\n";
  if (!card) return absl::PermissionDeniedError(absl::StrCat(CardPathFor(path), ": cannot write"));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Model>> RandomModel(const ModelConfig& config, uint64_t seed,
                                                   const PrecisionPlan& plan) {
  WeightStore store = WeightStore::Random(seed);
  return BuildModel(config, store, plan);
}

}  // namespace vitq
