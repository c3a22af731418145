#include "backends/weight_store.h"

#include <optional>
#include <random>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "backends/artifact.h"

namespace vitq {
namespace {

bool AnyStartsWith(const SafetensorsFile& f, const std::string& prefix) {
  for (const std::string& n : f.Names()) {
    if (absl::StartsWith(n, prefix)) return true;
  }
  return false;
}

// A canonical name split as "<head>.<index>.<rest>", e.g. "blocks.3.mlp.fc1.weight" → (3,
// "mlp.fc1.weight").
struct Indexed {
  int index = -1;
  std::string rest;
};
std::optional<Indexed> AfterIndex(const std::string& name, const std::string& head) {
  if (!absl::StartsWith(name, head)) return std::nullopt;
  const size_t dot = name.find('.', head.size());
  Indexed out;
  if (dot == std::string::npos ||
      !absl::SimpleAtoi(name.substr(head.size(), dot - head.size()), &out.index)) {
    return std::nullopt;
  }
  out.rest = name.substr(dot + 1);
  return out;
}

// "mlp.fc1.x" → "mlp.0.x", "mlp.fc2.x" → "mlp.3.x" (torchvision's MLP Sequential indices).
std::string TorchvisionMlp(const std::string& rest) {
  if (absl::StartsWith(rest, "mlp.fc1.")) return "mlp.0." + rest.substr(8);
  if (absl::StartsWith(rest, "mlp.fc2.")) return "mlp.3." + rest.substr(8);
  return rest;
}

// torchvision VisionTransformer names; `legacy_mlp`: "mlp.linear_1" / "mlp.linear_2" (files
// older than torchvision 0.14) instead of "mlp.0" / "mlp.3".
std::function<std::string(const std::string&)> TorchvisionVitNames(bool legacy_mlp) {
  return [legacy_mlp](const std::string& c) -> std::string {
    if (c == "cls_token") return "class_token";
    if (c == "pos_embed") return "encoder.pos_embedding";
    if (absl::StartsWith(c, "patch_embed.proj.")) return "conv_proj." + c.substr(17);
    if (absl::StartsWith(c, "norm.")) return "encoder.ln." + c.substr(5);
    if (absl::StartsWith(c, "head.")) return "heads.head." + c.substr(5);
    const std::optional<Indexed> block = AfterIndex(c, "blocks.");
    if (!block) return c;
    const std::string prefix = absl::StrCat("encoder.layers.encoder_layer_", block->index, ".");
    const std::string& rest = block->rest;
    if (rest == "attn.qkv.weight") return prefix + "self_attention.in_proj_weight";
    if (rest == "attn.qkv.bias") return prefix + "self_attention.in_proj_bias";
    if (absl::StartsWith(rest, "attn.proj."))
      return prefix + "self_attention.out_proj." + rest.substr(10);
    if (absl::StartsWith(rest, "norm1.")) return prefix + "ln_1." + rest.substr(6);
    if (absl::StartsWith(rest, "norm2.")) return prefix + "ln_2." + rest.substr(6);
    if (legacy_mlp && absl::StartsWith(rest, "mlp.fc1."))
      return prefix + "mlp.linear_1." + rest.substr(8);
    if (legacy_mlp && absl::StartsWith(rest, "mlp.fc2."))
      return prefix + "mlp.linear_2." + rest.substr(8);
    return prefix + TorchvisionMlp(rest);
  };
}

// torchvision SwinTransformer: features.0 = patch embedding (conv, permute, norm),
// features.{2i+1} = stage i blocks, features.{2i} = patch merging before stage i.
std::string TorchvisionSwinName(const std::string& c) {
  if (absl::StartsWith(c, "patch_embed.proj.")) return "features.0.0." + c.substr(17);
  if (absl::StartsWith(c, "patch_embed.norm.")) return "features.0.2." + c.substr(17);
  if (absl::StartsWith(c, "head.fc.")) return "head." + c.substr(8);
  const std::optional<Indexed> stage = AfterIndex(c, "layers.");
  if (!stage) return c;
  if (const std::optional<Indexed> block = AfterIndex(stage->rest, "blocks.")) {
    return absl::StrCat("features.", 2 * stage->index + 1, ".", block->index, ".",
                        TorchvisionMlp(block->rest));
  }
  if (absl::StartsWith(stage->rest, "downsample.")) {
    return absl::StrCat("features.", 2 * stage->index, ".", stage->rest.substr(11));
  }
  return c;
}

// timm < 0.9 stored the merging layer at the end of the previous stage.
std::string TimmLegacySwinName(const std::string& c) {
  if (absl::StartsWith(c, "head.fc.")) return "head." + c.substr(8);
  const std::optional<Indexed> stage = AfterIndex(c, "layers.");
  if (stage && absl::StartsWith(stage->rest, "downsample.")) {
    return absl::StrCat("layers.", stage->index - 1, ".", stage->rest);
  }
  return c;
}

bool IsIgnorableBuffer(const std::string& name) {
  return absl::EndsWith(name, "relative_position_index") || absl::EndsWith(name, "attn_mask");
}

}  // namespace

std::string SchemeName(NamingScheme scheme) {
  switch (scheme) {
    case NamingScheme::kTimm:
      return "timm";
    case NamingScheme::kTimmLegacySwin:
      return "timm (legacy swin)";
    case NamingScheme::kTorchvision:
      return "torchvision";
    case NamingScheme::kRandom:
      return "random";
  }
  return "?";
}

absl::StatusOr<WeightStore> WeightStore::FromFile(std::shared_ptr<const SafetensorsFile> file,
                                                  Arch arch) {
  WeightStore store;
  store.file_ = file;
  if (IsQuantizedArtifact(*file)) {  // written by vitq quantize: timm names
    auto info = ReadArtifactInfo(*file);
    if (!info.ok()) return info.status();
    store.quantized_layers_ = std::move(info->layers);
    store.scheme_ = NamingScheme::kTimm;
    store.to_file_ = [](const std::string& c) { return c; };
    return store;
  }
  const bool tv_vit = file->Has("class_token") || AnyStartsWith(*file, "encoder.layers.");
  const bool tv_swin = AnyStartsWith(*file, "features.");
  if (arch == Arch::kDeit) {
    if (tv_swin || AnyStartsWith(*file, "layers.")) {
      return absl::InvalidArgumentError(
          absl::StrCat(file->path(), ": tensor names are Swin's but the architecture is deit"));
    }
    if (tv_vit) {
      store.scheme_ = NamingScheme::kTorchvision;
      store.to_file_ =
          TorchvisionVitNames(AnyStartsWith(*file, "encoder.layers.encoder_layer_0.mlp.linear_1"));
    } else {
      store.scheme_ = NamingScheme::kTimm;
      store.to_file_ = [](const std::string& c) { return c; };
    }
    return store;
  }
  if (tv_vit || AnyStartsWith(*file, "blocks.")) {
    return absl::InvalidArgumentError(
        absl::StrCat(file->path(), ": tensor names are DeiT/ViT's but the architecture is swin"));
  }
  if (tv_swin) {
    store.scheme_ = NamingScheme::kTorchvision;
    store.to_file_ = TorchvisionSwinName;
  } else if (AnyStartsWith(*file, "layers.0.downsample.")) {
    store.scheme_ = NamingScheme::kTimmLegacySwin;
    store.to_file_ = TimmLegacySwinName;
  } else {
    store.scheme_ = NamingScheme::kTimm;
    store.to_file_ = [](const std::string& c) { return c; };
  }
  return store;
}

WeightStore WeightStore::Random(uint64_t seed) {
  WeightStore store;
  store.scheme_ = NamingScheme::kRandom;
  store.seed_ = seed;
  store.to_file_ = [](const std::string& c) { return c; };
  return store;
}

bool WeightStore::Has(const std::string& canonical) const {
  if (scheme_ == NamingScheme::kRandom) return true;
  return file_->Has(to_file_(canonical));
}

absl::StatusOr<Tensor> WeightStore::Take(const std::string& canonical, const Shape& expected) {
  if (scheme_ == NamingScheme::kRandom) {
    // Small random values; LayerNorm scales near 1 so activations stay in range.
    std::mt19937_64 rng(seed_ * 1000003 + draws_++);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Tensor t(expected);
    const bool norm_weight =
        absl::StrContains(canonical, "norm") && absl::EndsWith(canonical, ".weight");
    for (float& v : t.span()) v = norm_weight ? 1.0f + 0.1f * normal(rng) : 0.02f * normal(rng);
    taken_elements_ += t.numel();
    taken_shapes_.emplace_back(canonical, expected);
    return t;
  }
  if (absl::EndsWith(canonical, ".weight")) {
    const std::string layer = canonical.substr(0, canonical.size() - 7);
    auto q = quantized_layers_.find(layer);
    if (q != quantized_layers_.end()) {
      auto t = ReadQuantizedWeight(*file_, layer, q->second.weight_bits, expected,
                                   q->second.weight_scales);
      if (!t.ok()) return t.status();
      taken_.insert(layer + ".weight_q");
      taken_.insert(layer + ".weight_scale");
      taken_elements_ += t->numel();
      taken_shapes_.emplace_back(canonical, expected);
      return t;
    }
  }
  const std::string name = to_file_(canonical);
  absl::StatusOr<TensorView> view = file_->Get(name);
  if (!view.ok()) {
    return absl::NotFoundError(absl::StrCat(file_->path(), ": missing tensor '", name,
                                            "' (expected shape ", ShapeToString(expected), ")"));
  }
  if (view->shape != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(file_->path(), ": tensor '", name, "' has shape ", ShapeToString(view->shape),
                     ", expected ", ShapeToString(expected), " for this architecture"));
  }
  absl::StatusOr<Tensor> t = ToFloatTensor(*view);
  if (!t.ok())
    return absl::InvalidArgumentError(absl::StrCat(file_->path(), ": ", t.status().message()));
  taken_.insert(name);
  taken_elements_ += t->numel();
  taken_shapes_.emplace_back(canonical, expected);
  return t;
}

absl::Status WeightStore::CheckAllUsed() const {
  if (scheme_ == NamingScheme::kRandom) return absl::OkStatus();
  std::vector<std::string> extra;
  for (const std::string& n : file_->Names()) {
    if (!taken_.count(n) && !IsIgnorableBuffer(n)) extra.push_back(n);
  }
  if (extra.empty()) return absl::OkStatus();
  const size_t shown = std::min<size_t>(extra.size(), 5);
  return absl::InvalidArgumentError(
      absl::StrCat(file_->path(), ": ", extra.size(),
                   " unexpected tensor(s) for this architecture (", SchemeName(scheme_),
                   " names): '", absl::StrJoin(extra.begin(), extra.begin() + shown, "', '"), "'",
                   extra.size() > shown ? ", ..." : ""));
}

}  // namespace vitq
