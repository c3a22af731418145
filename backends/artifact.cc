#include "backends/artifact.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "backends/quantize.h"

namespace vitq {
namespace {

absl::Status LayerError(const SafetensorsFile& f, const std::string& layer,
                        const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(f.path(), ": layer '", layer, "': ", what));
}

absl::StatusOr<QuantSpec> ParseAttention(const SafetensorsFile& f, const std::string& layer,
                                         const nlohmann::json& j) {
  for (const char* key : {"qkv_bits", "probs_bits", "q_scale", "k_scale", "v_scale"}) {
    if (!j.contains(key) || !j[key].is_number()) {
      return LayerError(f, layer, absl::StrCat("missing number '", key, "'"));
    }
  }
  QuantSpec spec;
  spec.precision = Precision::kInt8;
  spec.is_attention = true;
  spec.attn.qkv_bits = j["qkv_bits"].get<int>();
  spec.attn.probs_bits = j["probs_bits"].get<int>();
  spec.attn.q_scale = j["q_scale"].get<float>();
  spec.attn.k_scale = j["k_scale"].get<float>();
  spec.attn.v_scale = j["v_scale"].get<float>();
  if (j.contains("probs_scale")) {
    if (!j["probs_scale"].is_number() || !(j["probs_scale"].get<float>() > 0))
      return LayerError(f, layer, "'probs_scale' must be a positive number");
    spec.attn.probs_scale = j["probs_scale"].get<float>();
  }
  if (j.contains("qk_norm")) {  // Q-ViT rectification: tensors taken when the model is built
    if (!j["qk_norm"].is_boolean()) return LayerError(f, layer, "'qk_norm' must be true or false");
    spec.attn.rectify = j["qk_norm"].get<bool>();
    if (spec.attn.rectify) {
      if (!j.contains("qk_norm_eps") || !j["qk_norm_eps"].is_number())
        return LayerError(f, layer, "'qk_norm' needs the number 'qk_norm_eps'");
      spec.attn.rectify_eps = j["qk_norm_eps"].get<float>();
    }
  }
  if (absl::Status s = ValidateSpec(spec); !s.ok())
    return LayerError(f, layer, std::string(s.message()));
  return spec;
}

absl::StatusOr<QuantSpec> ParseLayer(const SafetensorsFile& f, const std::string& layer,
                                     const nlohmann::json& j) {
  if (!j.is_object()) return LayerError(f, layer, "entry is not an object");
  if (j.value("kind", "linear") == "attention") return ParseAttention(f, layer, j);
  for (const char* key : {"weight_bits", "act_bits", "act_scale", "act_zero_point"}) {
    if (!j.contains(key) || !j[key].is_number())
      return LayerError(f, layer, absl::StrCat("missing number '", key, "'"));
  }
  if (j.value("precision", "int8") != "int8") return LayerError(f, layer, "precision must be int8");
  if (j.value("granularity", "per_channel") != "per_channel") {
    return LayerError(f, layer, "only per_channel weight granularity is supported");
  }
  QuantSpec spec;
  spec.precision = Precision::kInt8;
  spec.weight_bits = j["weight_bits"].get<int>();
  spec.act.bits = j["act_bits"].get<int>();
  spec.act.scale = j["act_scale"].get<float>();
  spec.act.zero_point = j["act_zero_point"].get<int32_t>();
  if (absl::Status s = ValidateSpec(spec); !s.ok())
    return LayerError(f, layer, std::string(s.message()));
  return spec;
}

}  // namespace

std::string ArtifactLayersJson(const std::map<std::string, QuantSpec>& layers) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [name, s] : layers) {
    if (s.is_attention) {
      const QuantSpec::Attention& a = s.attn;
      j[name] = {{"precision", "int8"}, {"kind", "attention"}, {"qkv_bits", a.qkv_bits},
                 {"probs_bits", a.probs_bits}, {"q_scale", a.q_scale},
                 {"k_scale", a.k_scale}, {"v_scale", a.v_scale}};
      if (a.probs_scale > 0) j[name]["probs_scale"] = a.probs_scale;
      if (a.rectify) {
        j[name]["qk_norm"] = true;
        j[name]["qk_norm_eps"] = a.rectify_eps;
      }
      continue;
    }
    j[name] = {{"precision", "int8"},      {"weight_bits", s.weight_bits},
               {"act_bits", s.act.bits},   {"granularity", "per_channel"},
               {"act_scale", s.act.scale}, {"act_zero_point", s.act.zero_point}};
  }
  return j.dump();
}

void AddQuantizedWeight(SafetensorsWriter& writer, const std::string& layer,
                        const WeightQuant& weight) {
  const int64_t n = weight.rows;
  const std::vector<uint8_t> packed = PackRows(weight.values, n, weight.cols, weight.bits);
  writer.Add(layer + ".weight_q", DType::kU8, {n, static_cast<int64_t>(packed.size()) / n},
             packed);
  writer.Add(layer + ".weight_scale", DType::kF32, {n},
             {reinterpret_cast<const uint8_t*>(weight.scales.data()),
              weight.scales.size() * sizeof(float)});
}

void SetArtifactMetadata(SafetensorsWriter& writer, const ModelConfig& config,
                         const std::map<std::string, QuantSpec>& layers,
                         const std::string& provenance_json) {
  writer.SetMetadata("vitq.format", kArtifactFormat);
  bool uses_v2 = false;
  for (const auto& [name, spec] : layers)
    uses_v2 |= spec.is_attention && (spec.attn.probs_scale > 0 || spec.attn.rectify);
  writer.SetMetadata("vitq.format_version",
                     std::to_string(uses_v2 ? kArtifactVersion : kArtifactOldestVersion));
  writer.SetMetadata("vitq.card", ModelConfigToYaml(config));
  writer.SetMetadata("vitq.layers", ArtifactLayersJson(layers));
  writer.SetMetadata("vitq.quantization", provenance_json);
  if (!config.labels_path.empty()) {  // the artifact carries its class names
    std::ifstream labels(config.labels_path);
    std::stringstream text;
    text << labels.rdbuf();
    if (labels) writer.SetMetadata("vitq.labels", text.str());
  }
}

bool IsQuantizedArtifact(const SafetensorsFile& file) {
  auto it = file.metadata().find("vitq.format");
  return it != file.metadata().end() && it->second == kArtifactFormat;
}

absl::StatusOr<ArtifactInfo> ReadArtifactInfo(const SafetensorsFile& f) {
  const auto& md = f.metadata();
  auto get = [&](const char* key) -> const std::string* {
    auto it = md.find(key);
    return it == md.end() ? nullptr : &it->second;
  };
  const std::string* version = get("vitq.format_version");
  if (!version || (*version != std::to_string(kArtifactVersion) &&
                   *version != std::to_string(kArtifactOldestVersion))) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": unsupported artifact version '", version ? *version : "",
                     "' (this vitq reads versions ", kArtifactOldestVersion, " to ",
                     kArtifactVersion, ")"));
  }
  ArtifactInfo info;
  const std::string* card = get("vitq.card");
  const std::string* layers = get("vitq.layers");
  if (!card || !layers)
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": metadata lacks vitq.card or vitq.layers"));
  info.card_yaml = *card;
  if (const std::string* q = get("vitq.quantization")) info.quantization_json = *q;
  if (const std::string* labels = get("vitq.labels")) {
    info.labels = absl::StrSplit(*labels, '\n', absl::SkipEmpty());
  }
  const nlohmann::json j = nlohmann::json::parse(*layers, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": vitq.layers is not a valid JSON object"));
  }
  for (const auto& [layer, entry] : j.items()) {
    auto spec = ParseLayer(f, layer, entry);
    if (!spec.ok()) return spec.status();
    info.layers[layer] = *spec;
  }
  return info;
}

absl::StatusOr<Tensor> ReadQuantizedWeight(const SafetensorsFile& f, const std::string& layer,
                                           int bits, const Shape& expected,
                                           std::vector<float>& scales) {
  const int64_t n = expected[0], k = NumElements(expected) / n, row_bytes = (k * bits + 7) / 8;
  auto q = f.Get(layer + ".weight_q");
  auto s = f.Get(layer + ".weight_scale");
  if (!q.ok() || !s.ok()) return LayerError(f, layer, "missing weight_q or weight_scale tensor");
  if (q->dtype != DType::kU8 || q->shape != Shape{n, row_bytes}) {
    return LayerError(
        f, layer,
        absl::StrCat("weight_q must be U8 ", ShapeToString({n, row_bytes}), " for ", bits,
                     "-bit weights, found ", DTypeName(q->dtype), " ", ShapeToString(q->shape)));
  }
  if (s->dtype != DType::kF32 || s->shape != Shape{n}) {
    return LayerError(f, layer,
                      absl::StrCat("weight_scale must be F32 [", n, "], found ",
                                   DTypeName(s->dtype), " ", ShapeToString(s->shape)));
  }
  scales.resize(n);
  std::memcpy(scales.data(), s->bytes.data(), n * sizeof(float));
  for (int64_t r = 0; r < n; ++r) {
    if (!(scales[r] > 0) || !std::isfinite(scales[r])) {
      return LayerError(
          f, layer,
          absl::StrCat("weight_scale[", r, "] = ", scales[r], " is not positive and finite"));
    }
  }
  Tensor out(expected);
  for (int64_t r = 0; r < n; ++r) {
    std::vector<uint8_t> row(q->bytes.begin() + r * row_bytes,
                             q->bytes.begin() + (r + 1) * row_bytes);
    auto codes = UnpackSigned(row, k, bits);
    if (!codes.ok()) return LayerError(f, layer, std::string(codes.status().message()));
    for (int64_t c = 0; c < k; ++c) out.data()[r * k + c] = (*codes)[c] * scales[r];
  }
  return out;
}

std::vector<uint8_t> PackRows(const std::vector<int8_t>& values, int64_t rows, int64_t cols,
                              int bits) {
  std::vector<uint8_t> out;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int8_t> row(values.begin() + r * cols, values.begin() + (r + 1) * cols);
    const std::vector<uint8_t> packed = PackSigned(row, bits);
    out.insert(out.end(), packed.begin(), packed.end());
  }
  return out;
}

std::string ModelConfigToYaml(const ModelConfig& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << c.name;
  out << YAML::Key << "arch" << YAML::Value << ArchName(c.arch);
  out << YAML::Key << "img_size" << YAML::Value << c.img_size;
  out << YAML::Key << "in_chans" << YAML::Value << c.in_chans;
  out << YAML::Key << "patch_size" << YAML::Value << c.patch_size;
  out << YAML::Key << "embed_dim" << YAML::Value << c.embed_dim;
  out << YAML::Key << "num_classes" << YAML::Value << c.num_classes;
  out << YAML::Key << "mlp_ratio" << YAML::Value << c.mlp_ratio;
  out << YAML::Key << "qkv_bias" << YAML::Value << c.qkv_bias;
  out << YAML::Key << "layer_norm_eps" << YAML::Value << c.layer_norm_eps;
  if (c.arch == Arch::kDeit) {
    out << YAML::Key << "depth" << YAML::Value << c.depth;
    out << YAML::Key << "num_heads" << YAML::Value << c.num_heads;
    out << YAML::Key << "distilled" << YAML::Value << c.distilled;
  } else {
    out << YAML::Key << "depths" << YAML::Value << YAML::Flow << c.depths;
    out << YAML::Key << "num_heads" << YAML::Value << YAML::Flow << c.stage_heads;
    out << YAML::Key << "window_size" << YAML::Value << c.window_size;
  }
  out << YAML::Key << "preprocess" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "mean" << YAML::Value << YAML::Flow << c.preprocess.mean;
  out << YAML::Key << "std" << YAML::Value << YAML::Flow << c.preprocess.std;
  out << YAML::Key << "crop_pct" << YAML::Value << c.preprocess.crop_pct;
  out << YAML::Key << "interpolation" << YAML::Value << c.preprocess.interpolation;
  out << YAML::EndMap;
  out << YAML::EndMap;
  return out.c_str();
}

}  // namespace vitq
