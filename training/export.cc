#include "training/export.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "backends/safetensors.h"

namespace vitq::training {

absl::Status ExportCheckpoint(torch::nn::Module& model, const std::string& card_yaml,
                              const std::string& name, const std::string& labels_path,
                              const std::map<std::string, std::string>& provenance,
                              const std::string& stem) {
  SafetensorsWriter writer;
  for (const auto& kv : model.named_parameters()) {
    torch::Tensor t = kv.value().detach().to(torch::kFloat32).contiguous();
    const auto* bytes = static_cast<const uint8_t*>(t.data_ptr());
    writer.Add(kv.key(), DType::kF32, Shape(t.sizes().begin(), t.sizes().end()),
               std::span<const uint8_t>(bytes, t.numel() * sizeof(float)));
  }
  writer.SetMetadata("format", "vitq-checkpoint");
  writer.SetMetadata("name", name);
  for (const auto& [key, value] : provenance) writer.SetMetadata("training." + key, value);
  std::filesystem::create_directories(std::filesystem::path(stem).parent_path().empty()
                                          ? std::filesystem::path(".")
                                          : std::filesystem::path(stem).parent_path());
  if (absl::Status s = writer.WriteFile(stem + ".safetensors"); !s.ok()) return s;
  try {
    YAML::Node card = YAML::Load(card_yaml);
    card["name"] = name;
    if (!labels_path.empty()) {
      namespace fs = std::filesystem;
      const fs::path out_dir = fs::absolute(fs::path(stem)).parent_path();
      card["labels"] = fs::relative(fs::absolute(labels_path), out_dir).string();
    }
    for (const auto& [key, value] : provenance) card["training"][key] = value;
    YAML::Emitter out;
    out << card;
    std::ofstream(stem + ".yaml") << "# Model card written by vitq-train (docs/FORMAT.md)\n"
                                  << out.c_str() << "\n";
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("model card: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status LoadCheckpoint(torch::nn::Module& model, const std::string& path) {
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  torch::NoGradGuard no_grad;
  for (auto& kv : model.named_parameters()) {
    auto t = (*file)->ReadFloat(kv.key());
    if (!t.ok()) return t.status();
    const Shape want(kv.value().sizes().begin(), kv.value().sizes().end());
    if (t->shape() != want) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", kv.key(), "' has shape ",
                                                     ShapeToString(t->shape()), ", expected ",
                                                     ShapeToString(want)));
    }
    kv.value().copy_(torch::from_blob(t->data(), kv.value().sizes(), torch::kFloat32));
  }
  return absl::OkStatus();
}

absl::Status SaveModule(torch::nn::Module& module, const std::string& path) {
  try {
    torch::serialize::OutputArchive archive;
    module.save(archive);
    archive.save_to(path);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(path, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status LoadModule(torch::nn::Module& module, const std::string& path) {
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    module.load(archive);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot load: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace vitq::training
