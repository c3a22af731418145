#include "quant/ptq.h"

#include <yaml-cpp/yaml.h>

#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "backends/artifact.h"
#include "backends/model.h"
#include "backends/status_macros.h"

namespace vitq::quant {
namespace {

bool IsEdgeLayer(const std::string& layer) {
  return layer == "patch_embed.proj" || layer == "head" || layer == "head_dist" ||
         layer == "head.fc";
}

absl::Status ValidBits(const LayerBits& b, const std::string& where) {
  QuantSpec s;
  s.precision = Precision::kInt8;
  s.weight_bits = b.weight_bits;
  s.act = ActQuantFromRange(-1, 1, b.act_bits);
  if (absl::Status st = ValidateSpec(s); !st.ok())
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", st.message()));
  return absl::OkStatus();
}

LayerBits ReadBits(const YAML::Node& n, LayerBits fallback) {
  if (n["wbits"]) fallback.weight_bits = n["wbits"].as<int>();
  if (n["abits"]) fallback.act_bits = n["abits"].as<int>();
  return fallback;
}

ActQuant RangeFor(const RangeObserver& obs, const PtqOptions& o, int bits) {
  if (o.method == "percentile") {
    const auto [lo, hi] = obs.PercentileRange(o.percentile);
    return ActQuantFromRange(lo, hi, bits);
  }
  return ActQuantFromRange(obs.min(), obs.max(), bits);
}

// max |x| (or the percentile range's larger end) over the signed code range.
float SymmetricScale(const RangeObserver& obs, const PtqOptions& o, int bits) {
  float lo = obs.min(), hi = obs.max();
  if (o.method == "percentile") std::tie(lo, hi) = obs.PercentileRange(o.percentile);
  const float m = std::max(std::fabs(lo), std::fabs(hi));
  return m > 0 ? m / static_cast<float>((1 << (bits - 1)) - 1) : 1.0f;
}

Tensor Slice(const Tensor& images, int64_t begin, int64_t count) {
  Shape shape = images.shape();
  shape[0] = count;
  Tensor out(shape);
  const int64_t per = images.numel() / images.dim(0);
  std::memcpy(out.data(), images.data() + begin * per, count * per * sizeof(float));
  return out;
}

std::string LayersJson(const std::map<std::string, QuantSpec>& layers) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [name, s] : layers) {
    if (s.is_attention) {
      j[name] = {{"precision", "int8"},         {"kind", "attention"},
                 {"qkv_bits", s.attn.qkv_bits}, {"probs_bits", s.attn.probs_bits},
                 {"q_scale", s.attn.q_scale},   {"k_scale", s.attn.k_scale},
                 {"v_scale", s.attn.v_scale}};
      continue;
    }
    j[name] = {{"precision", "int8"},      {"weight_bits", s.weight_bits},
               {"act_bits", s.act.bits},   {"granularity", "per_channel"},
               {"act_scale", s.act.scale}, {"act_zero_point", s.act.zero_point}};
  }
  return j.dump();
}

}  // namespace

LayerBits BitProfile::For(const std::string& layer) const {
  if (auto it = layers.find(layer); it != layers.end()) return it->second;
  return IsEdgeLayer(layer) ? edge : all;
}

absl::StatusOr<BitProfile> LoadBitProfile(const std::string& path, LayerBits defaults) {
  BitProfile p;
  p.all = defaults;
  try {
    YAML::Node root = YAML::LoadFile(path);
    if (root["default"]) p.all = ReadBits(root["default"], p.all);
    if (root["edge"]) p.edge = ReadBits(root["edge"], p.edge);
    for (const auto& kv : root["layers"])
      p.layers[kv.first.as<std::string>()] = ReadBits(kv.second, p.all);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  VITQ_RETURN_IF_ERROR(ValidBits(p.all, path + ": default"));
  VITQ_RETURN_IF_ERROR(ValidBits(p.edge, path + ": edge"));
  for (const auto& [layer, bits] : p.layers)
    VITQ_RETURN_IF_ERROR(ValidBits(bits, path + ": " + layer));
  return p;
}

absl::StatusOr<PtqResult> QuantizeCheckpoint(const std::string& model_path,
                                             const std::optional<std::string>& arch,
                                             const Tensor& calib, const PtqOptions& o,
                                             const std::string& output) {
  if (o.method != "minmax" && o.method != "percentile") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown method '", o.method, "' (minmax or percentile)"));
  }
  VITQ_ASSIGN_OR_RETURN(ModelConfig config, ResolveConfig(model_path, arch));
  VITQ_ASSIGN_OR_RETURN(std::shared_ptr<const SafetensorsFile> file,
                        SafetensorsFile::Open(model_path));
  if (IsQuantizedArtifact(*file)) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_path, " is already quantized: start from a float checkpoint"));
  }
  // 1. The float model with an observer on every Linear's input.
  std::map<std::string, std::shared_ptr<RangeObserver>> observers;
  std::map<std::string, std::array<std::shared_ptr<RangeObserver>, 3>> qkv_observers;  // q, k, v
  const PrecisionPlan observe = [&](const std::string& layer) {
    QuantSpec s = QuantSpec::Float(Precision::kFp32);
    if (absl::EndsWith(layer, "attn.matmul")) {
      auto& obs = qkv_observers[layer];
      for (auto& o : obs) o = std::make_shared<RangeObserver>();
      s.q_observer = obs[0];
      s.k_observer = obs[1];
      s.v_observer = obs[2];
      return s;
    }
    s.observer = observers.emplace(layer, std::make_shared<RangeObserver>()).first->second;
    return s;
  };
  VITQ_ASSIGN_OR_RETURN(WeightStore store, WeightStore::FromFile(file, config.arch));
  VITQ_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, BuildModel(config, store, observe));
  for (int64_t b = 0; b < calib.dim(0); b += o.batch_size) {
    VITQ_RETURN_IF_ERROR(
        model->Forward(Slice(calib, b, std::min(o.batch_size, calib.dim(0) - b))).status());
  }
  // 2. Per-layer quantizers.
  PtqResult result;
  result.calib_images = calib.dim(0);
  for (const auto& [layer, obs] : observers) {
    const LayerBits bits = o.bits.For(layer);
    QuantSpec s;
    s.precision = Precision::kInt8;
    s.weight_bits = bits.weight_bits;
    s.act = RangeFor(*obs, o, bits.act_bits);
    VITQ_RETURN_IF_ERROR(ValidateSpec(s));
    result.layers[layer] = s;
  }
  if (o.quantize_attention) {
    for (const auto& [layer, obs] : qkv_observers) {
      const LayerBits bits = o.bits.For(layer);
      QuantSpec s;
      s.precision = Precision::kInt8;
      s.is_attention = true;
      s.attn.qkv_bits = s.attn.probs_bits = bits.act_bits;
      s.attn.q_scale = SymmetricScale(*obs[0], o, bits.act_bits);
      s.attn.k_scale = SymmetricScale(*obs[1], o, bits.act_bits);
      s.attn.v_scale = SymmetricScale(*obs[2], o, bits.act_bits);
      VITQ_RETURN_IF_ERROR(ValidateSpec(s));
      result.layers[layer] = s;
    }
  }
  // 3. The artifact: quantized weights of integer layers, every other tensor as float.
  VITQ_ASSIGN_OR_RETURN(WeightStore reread, WeightStore::FromFile(file, config.arch));
  SafetensorsWriter writer;
  for (const auto& [name, shape] : store.taken_shapes()) {
    VITQ_ASSIGN_OR_RETURN(Tensor t, reread.Take(name, shape));
    const std::string layer =
        absl::EndsWith(name, ".weight") ? name.substr(0, name.size() - 7) : "";
    auto q = result.layers.find(layer);
    if (q == result.layers.end()) {
      writer.AddFloat(name, t);
      continue;
    }
    const int64_t n = shape[0], k = t.numel() / n;
    const WeightQuant w = QuantizeWeights(t.data(), n, k, q->second.weight_bits);
    const std::vector<uint8_t> packed = PackRows(w.values, n, k, w.bits);
    writer.Add(layer + ".weight_q", DType::kU8, {n, static_cast<int64_t>(packed.size()) / n},
               packed);
    writer.Add(
        layer + ".weight_scale", DType::kF32, {n},
        {reinterpret_cast<const uint8_t*>(w.scales.data()), w.scales.size() * sizeof(float)});
  }
  nlohmann::ordered_json provenance = {
      {"method", o.method},
      {"settings",
       {{"percentile", o.percentile},
        {"weight_granularity", "per_channel"},
        {"act_granularity", "per_tensor"}}},
      {"calibration", {{"data", o.calib_spec}, {"count", calib.dim(0)}, {"seed", o.seed}}},
      {"source", model_path},
      {"tool", "vitq quantize 0.1"}};
  writer.SetMetadata("vitq.format", kArtifactFormat);
  writer.SetMetadata("vitq.format_version", std::to_string(kArtifactVersion));
  writer.SetMetadata("vitq.card", ModelConfigToYaml(config));
  writer.SetMetadata("vitq.layers", LayersJson(result.layers));
  writer.SetMetadata("vitq.quantization", provenance.dump());
  if (!config.labels_path.empty()) {  // the artifact carries its class names
    std::ifstream labels(config.labels_path);
    std::stringstream text;
    text << labels.rdbuf();
    if (labels) writer.SetMetadata("vitq.labels", text.str());
  }
  VITQ_RETURN_IF_ERROR(writer.WriteFile(output));
  return result;
}

}  // namespace vitq::quant
