#include "backends/model.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
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
  return BuildModel(config, store, options.plan);
}

absl::StatusOr<std::unique_ptr<Model>> RandomModel(const ModelConfig& config, uint64_t seed,
                                                   const PrecisionPlan& plan) {
  WeightStore store = WeightStore::Random(seed);
  return BuildModel(config, store, plan);
}

}  // namespace vitq
