#include "backends/model_config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vitq {
namespace {

ModelConfig Deit(const std::string& name, int64_t dim, int64_t heads, bool distilled) {
  ModelConfig c;
  c.arch = Arch::kDeit;
  c.name = name;
  c.embed_dim = dim;
  c.depth = 12;
  c.num_heads = heads;
  c.distilled = distilled;
  return c;
}

ModelConfig Swin(const std::string& name, int64_t dim, std::vector<int64_t> depths) {
  ModelConfig c;
  c.arch = Arch::kSwin;
  c.name = name;
  c.patch_size = 4;
  c.embed_dim = dim;
  c.depths = std::move(depths);
  const int64_t h0 = dim / 32;
  c.stage_heads = {h0, 2 * h0, 4 * h0, 8 * h0};
  c.window_size = 7;
  c.layer_norm_eps = 1e-5f;
  return c;
}

const std::map<std::string, ModelConfig>& Presets() {
  static const auto* presets = new std::map<std::string, ModelConfig>{
      {"deit_tiny", Deit("deit_tiny", 192, 3, false)},
      {"deit_small", Deit("deit_small", 384, 6, false)},
      {"deit_base", Deit("deit_base", 768, 12, false)},
      {"deit_tiny_distilled", Deit("deit_tiny_distilled", 192, 3, true)},
      {"deit_small_distilled", Deit("deit_small_distilled", 384, 6, true)},
      {"deit_base_distilled", Deit("deit_base_distilled", 768, 12, true)},
      {"swin_tiny", Swin("swin_tiny", 96, {2, 2, 6, 2})},
      {"swin_small", Swin("swin_small", 96, {2, 2, 18, 2})},
      {"swin_base", Swin("swin_base", 128, {2, 2, 18, 2})},
  };
  return *presets;
}

const std::map<std::string, std::string>& PresetAliases() {
  static const auto* aliases = new std::map<std::string, std::string>{
      {"deit_tiny_patch16_224", "deit_tiny"},
      {"deit_small_patch16_224", "deit_small"},
      {"deit_base_patch16_224", "deit_base"},
      {"deit_tiny_distilled_patch16_224", "deit_tiny_distilled"},
      {"deit_small_distilled_patch16_224", "deit_small_distilled"},
      {"deit_base_distilled_patch16_224", "deit_base_distilled"},
      {"swin_tiny_patch4_window7_224", "swin_tiny"},
      {"swin_small_patch4_window7_224", "swin_small"},
      {"swin_base_patch4_window7_224", "swin_base"},
      {"vit_b_16", "deit_base"},
      {"swin_t", "swin_tiny"},
      {"swin_s", "swin_small"},
      {"swin_b", "swin_base"},
  };
  return *aliases;
}

template <typename T>
absl::Status Read(const YAML::Node& node, const char* key, T& out) {
  if (!node[key]) return absl::OkStatus();
  try {
    out = node[key].as<T>();
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("model card field '", key, "': ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status Positive(int64_t v, const char* field) {
  if (v <= 0) return absl::InvalidArgumentError(absl::StrCat(field, " must be positive, got ", v));
  return absl::OkStatus();
}

absl::Status ParseCardNode(const YAML::Node& root, const std::string& card_dir, ModelConfig& c) {
  if (!root.IsMap()) return absl::InvalidArgumentError("model card is not a YAML mapping");
  std::string arch;
  if (absl::Status s = Read(root, "arch", arch); !s.ok()) return s;
  if (arch == "deit" || arch == "vit") {
    c.arch = Arch::kDeit;
  } else if (arch == "swin") {
    c.arch = Arch::kSwin;
    c.patch_size = 4;
    c.layer_norm_eps = 1e-5f;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("model card: arch must be 'deit' or 'swin', got '", arch, "'"));
  }
  absl::Status s = absl::OkStatus();
  s.Update(Read(root, "name", c.name));
  s.Update(Read(root, "img_size", c.img_size));
  s.Update(Read(root, "in_chans", c.in_chans));
  s.Update(Read(root, "patch_size", c.patch_size));
  s.Update(Read(root, "embed_dim", c.embed_dim));
  s.Update(Read(root, "num_classes", c.num_classes));
  s.Update(Read(root, "mlp_ratio", c.mlp_ratio));
  s.Update(Read(root, "qkv_bias", c.qkv_bias));
  s.Update(Read(root, "layer_norm_eps", c.layer_norm_eps));
  s.Update(Read(root, "window_size", c.window_size));
  if (c.arch == Arch::kDeit) {
    s.Update(Read(root, "depth", c.depth));
    s.Update(Read(root, "num_heads", c.num_heads));
    s.Update(Read(root, "distilled", c.distilled));
  } else {
    s.Update(Read(root, "depths", c.depths));
    s.Update(Read(root, "num_heads", c.stage_heads));
  }
  if (const YAML::Node p = root["preprocess"]) {
    s.Update(Read(p, "mean", c.preprocess.mean));
    s.Update(Read(p, "std", c.preprocess.std));
    s.Update(Read(p, "crop_pct", c.preprocess.crop_pct));
    s.Update(Read(p, "interpolation", c.preprocess.interpolation));
  }
  std::string labels;
  s.Update(Read(root, "labels", labels));
  if (!labels.empty())
    c.labels_path = (std::filesystem::path(card_dir) / labels).lexically_normal().string();
  static const char* kKnown[] = {
      "arch",        "name",      "img_size", "in_chans",       "patch_size",  "embed_dim",
      "num_classes", "mlp_ratio", "qkv_bias", "layer_norm_eps", "window_size", "depth",
      "num_heads",   "distilled", "depths",   "preprocess",     "labels"};
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (std::find(std::begin(kKnown), std::end(kKnown), key) != std::end(kKnown)) continue;
    YAML::Emitter out;
    out << kv.second;
    c.extra[key] = out.c_str();
  }
  return s;
}

}  // namespace

std::string ArchName(Arch arch) { return arch == Arch::kDeit ? "deit" : "swin"; }

absl::Status ValidateConfig(const ModelConfig& c) {
  absl::Status s = absl::OkStatus();
  s.Update(Positive(c.img_size, "img_size"));
  s.Update(Positive(c.patch_size, "patch_size"));
  s.Update(Positive(c.embed_dim, "embed_dim"));
  s.Update(Positive(c.num_classes, "num_classes"));
  if (!s.ok()) return s;
  if (c.in_chans != 1 && c.in_chans != 3) {
    return absl::InvalidArgumentError(absl::StrCat("in_chans must be 1 or 3, got ", c.in_chans));
  }
  if (c.img_size % c.patch_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("img_size ", c.img_size, " is not a multiple of patch_size ", c.patch_size));
  }
  if (c.mlp_ratio <= 0) return absl::InvalidArgumentError("mlp_ratio must be positive");
  if (c.preprocess.mean.size() != static_cast<size_t>(c.in_chans) ||
      c.preprocess.std.size() != static_cast<size_t>(c.in_chans)) {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocess mean/std need ", c.in_chans, " values (in_chans)"));
  }
  if (c.arch == Arch::kDeit) {
    if (absl::Status d = Positive(c.depth, "depth"); !d.ok()) return d;
    if (absl::Status h = Positive(c.num_heads, "num_heads"); !h.ok()) return h;
    if (c.embed_dim % c.num_heads != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("embed_dim ", c.embed_dim, " is not divisible by num_heads ", c.num_heads));
    }
    return absl::OkStatus();
  }
  if (c.depths.empty() || c.depths.size() != c.stage_heads.size()) {
    return absl::InvalidArgumentError(
        "swin: depths and num_heads must be non-empty lists of the same length");
  }
  if (absl::Status w = Positive(c.window_size, "window_size"); !w.ok()) return w;
  for (size_t i = 0; i < c.depths.size(); ++i) {
    const int64_t dim = c.embed_dim << i;
    if (c.depths[i] <= 0 || c.stage_heads[i] <= 0 || dim % c.stage_heads[i] != 0) {
      return absl::InvalidArgumentError(absl::StrCat("swin stage ", i, ": depth ", c.depths[i],
                                                     ", heads ", c.stage_heads[i],
                                                     " do not fit width ", dim));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> PresetConfig(const std::string& name) {
  std::string key = name;
  if (auto a = PresetAliases().find(name); a != PresetAliases().end()) key = a->second;
  auto it = Presets().find(key);
  if (it == Presets().end()) {
    return absl::NotFoundError(absl::StrCat("unknown architecture preset '", name,
                                            "'; known: ", absl::StrJoin(PresetNames(), ", ")));
  }
  return it->second;
}

std::vector<std::string> PresetNames() {
  std::vector<std::string> names;
  for (const auto& [name, config] : Presets()) names.push_back(name);
  return names;
}

absl::StatusOr<ModelConfig> ParseModelCard(const std::string& yaml_text,
                                           const std::string& card_dir) {
  ModelConfig config;
  try {
    YAML::Node root = YAML::Load(yaml_text);
    if (absl::Status s = ParseCardNode(root, card_dir, config); !s.ok()) return s;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("model card is not valid YAML: ", e.what()));
  }
  if (absl::Status s = ValidateConfig(config); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model card: ", s.message()));
  }
  return config;
}

absl::StatusOr<ModelConfig> LoadModelCard(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open model card"));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<ModelConfig> config =
      ParseModelCard(text.str(), std::filesystem::path(path).parent_path().string());
  if (!config.ok())
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  if (config->name.empty()) config->name = std::filesystem::path(path).stem().string();
  return config;
}

std::string CardPathFor(const std::string& weights_path) {
  std::filesystem::path p(weights_path);
  return p.replace_extension(".yaml").string();
}

}  // namespace vitq
