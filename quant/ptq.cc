#include "quant/ptq.h"

#include <yaml-cpp/yaml.h>

#include <array>
#include <cmath>
#include <cstdio>
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
#include "quant/liu2021.h"
#include "quant/mixed_precision.h"

namespace vitq::quant {
namespace {

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

// Outputs x·wᵀ + b of `m` rows, with w (n, k) given dequantized.
std::vector<float> LinearOutputs(const std::vector<float>& x, int64_t m, int64_t k,
                                 const std::vector<float>& w, int64_t n,
                                 const std::vector<float>& bias) {
  const liu2021::LinearLayer layer{x, w, bias, m, k, n};
  return liu2021::QuantizedOutput(layer, 0, 8, 0, 8);
}

// What the liu2021 search chose for one Linear.
struct LinearChoice {
  std::vector<float> weight_scales;  // per output channel
  ActQuant act;
  std::vector<float> bias;  // corrected (empty: keep the checkpoint's)
  double similarity = 0, baseline = 0;
};

// Liu et al.'s similarity-aware search for one Linear, with the engine's own quantizers
// (per-channel symmetric weights, asymmetric u8 activations): alternately the weight-scale
// multiplier α and the activation-range multiplier β maximizing the Pearson correlation of the
// outputs with the float ones on the sampled inputs; then bias correction.
LinearChoice SearchLinear(const std::string& layer, const std::vector<float>& x, int64_t k,
                          const Tensor& weight, std::vector<float> bias, const RangeObserver& obs,
                          LayerBits bits, const PtqOptions& o) {
  const int64_t m = static_cast<int64_t>(x.size()) / k, n = weight.dim(0);
  const std::vector<float> w(weight.data(), weight.data() + n * k);
  if (bias.empty()) bias.assign(static_cast<size_t>(n), 0.0f);
  const std::vector<float> reference = LinearOutputs(x, m, k, w, n, bias);
  const WeightQuant max_based = QuantizeWeights(w.data(), n, k, bits.weight_bits);
  auto scales_for = [&](double alpha) {
    std::vector<float> s = max_based.scales;
    for (float& v : s) v = static_cast<float>(v * alpha);
    return s;
  };
  const auto [lo, hi] = o.search_from_percentile ? obs.PercentileRange(o.percentile)
                                                 : std::pair{obs.min(), obs.max()};
  auto act_for = [&, lo = lo, hi = hi](double beta) {
    return ActQuantFromRange(static_cast<float>(beta * lo), static_cast<float>(beta * hi),
                             bits.act_bits);
  };
  // Memoized operands: a grid scan over one multiplier keeps the other operand quantized once.
  double cached_alpha = -1, cached_beta = -1;
  std::vector<float> w_hat, x_hat(x.size());
  auto outputs = [&](double alpha, double beta) {
    if (alpha != cached_alpha) {
      w_hat = DequantizeWeights(
          QuantizeWeightsWithScales(w.data(), n, k, bits.weight_bits, scales_for(alpha)));
      cached_alpha = alpha;
    }
    if (beta != cached_beta) {
      FakeQuantActivations(x.data(), static_cast<int64_t>(x.size()), act_for(beta), x_hat.data());
      cached_beta = beta;
    }
    return LinearOutputs(x_hat, m, k, w_hat, n, bias);
  };
  auto similarity = [&](double alpha, double beta) {
    return liu2021::Pearson(reference, outputs(alpha, beta));
  };
  liu2021::SearchOptions search;
  search.candidates = o.search_candidates;
  search.max_rounds = o.search_rounds;
  const liu2021::SearchResult found = liu2021::AlternatingSearch(similarity, 1.0, 1.0, search);
  LinearChoice choice{scales_for(found.weight_step),
                      act_for(found.act_step),
                      {},
                      found.objective,
                      similarity(1.0, 1.0)};
  if (o.bias_correction) {
    const std::vector<float> error =
        liu2021::MeanOutputError(reference, outputs(found.weight_step, found.act_step), m, n);
    choice.bias = bias;
    for (int64_t c = 0; c < n; ++c) choice.bias[c] -= error[c];
  }
  std::fprintf(
      stderr,
      "liu2021: %-36s similarity %.5f (max-based %.5f), alpha %.3f, beta %.3f, %d round(s)\n",
      layer.c_str(), choice.similarity, choice.baseline, found.weight_step, found.act_step,
      found.rounds);
  return choice;
}

// The Linears' samples and the attention samples, grouped into blocks and given bits under
// the budget (quant/mixed_precision.h). Edge layers keep their fixed bits.
absl::StatusOr<std::vector<BlockChoice>> ChooseMixedPrecision(
    std::shared_ptr<const SafetensorsFile> file, Arch arch, const WeightStore& store,
    const std::map<std::string, std::shared_ptr<RangeObserver>>& observers,
    const std::map<std::string, std::shared_ptr<AttentionSample>>& attention_samples,
    const PtqOptions& o) {
  VITQ_ASSIGN_OR_RETURN(WeightStore weights, WeightStore::FromFile(file, arch));
  const std::map<std::string, Shape> shapes(store.taken_shapes().begin(),
                                            store.taken_shapes().end());
  std::map<std::string, LinearSample> linears;
  MixedPrecisionOptions mp = o.mixed;
  for (const auto& [name, shape] : shapes) {
    const std::string layer =
        absl::EndsWith(name, ".weight") ? name.substr(0, name.size() - 7) : std::string();
    auto obs = observers.find(layer);
    if (obs == observers.end()) {
      mp.fixed_bits += 32 * NumElements(shape);  // float tensors
      continue;
    }
    if (IsEdgeLayer(layer) || obs->second->row_len() == 0) {
      mp.fixed_bits += int64_t{o.bits.For(layer).weight_bits} * NumElements(shape) + 32 * shape[0];
      continue;
    }
    mp.fixed_bits += 32 * shape[0];  // per-channel scales
    LinearSample s;
    s.rows = obs->second->rows();
    s.k = obs->second->row_len();
    s.min = obs->second->min();
    s.max = obs->second->max();
    VITQ_ASSIGN_OR_RETURN(s.weight, weights.Take(name, shape));
    s.weight.Reshape({shape[0], NumElements(shape) / shape[0]});
    if (auto b = shapes.find(layer + ".bias"); b != shapes.end()) {
      VITQ_ASSIGN_OR_RETURN(Tensor bias, weights.Take(layer + ".bias", b->second));
      s.bias.assign(bias.data(), bias.data() + bias.numel());
    }
    linears.emplace(layer, std::move(s));
  }
  std::map<std::string, const AttentionSample*> attentions;
  for (const auto& [layer, sample] : attention_samples) {
    if (sample->count() > 0) attentions[layer] = sample.get();
  }
  VITQ_ASSIGN_OR_RETURN(std::vector<BlockChoice> choices,
                        AssignMixedPrecision(linears, attentions, mp));
  for (const BlockChoice& c : choices) {
    std::fprintf(stderr, "mixed precision: %-24s sensitivity %9.4f  W%dA%d  (%lld weights)\n",
                 c.block.c_str(), c.sensitivity, c.bits, c.act_bits,
                 static_cast<long long>(c.parameters));
  }
  return choices;
}

// Liu et al.'s search for one attention layer's q, k, v and softmax-output steps.
void SearchAttentionScales(const std::string& layer, const AttentionSample& sample,
                           const PtqOptions& o, QuantSpec::Attention& a) {
  liu2021::AttentionOperands ops{sample.q(),     sample.k(),      sample.v(),       sample.bias(),
                                 sample.count(), sample.tokens(), sample.head_dim()};
  liu2021::AttentionSearchOptions search;
  search.search.candidates = o.search_candidates;
  search.search.max_rounds = o.search_rounds;
  search.ranking = o.ranking;
  const liu2021::AttentionChoice c =
      liu2021::SearchAttention(ops, a.qkv_bits, a.probs_bits, search);
  a.q_scale = c.q_step;
  a.k_scale = c.k_step;
  a.v_scale = c.v_step;
  a.probs_scale = c.probs_step;
  std::fprintf(stderr,
               "liu2021: %-36s scores %.5f (max-based %.5f), output similarity %.5f (max-based "
               "%.5f)%s\n",
               layer.c_str(), c.scores_objective, c.scores_baseline, c.output_similarity,
               c.output_baseline, o.ranking ? ", ranking loss on" : "");
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
                                             const Tensor& calib, const PtqOptions& options,
                                             const std::string& output) {
  PtqOptions o = options;  // mixed precision fills in per-layer bits
  if (o.mixed_precision && o.method != "liu2021") {
    return absl::InvalidArgumentError("mixed precision is part of --method liu2021");
  }
  if (o.method != "minmax" && o.method != "percentile" && o.method != "liu2021") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown method '", o.method, "' (minmax, percentile or liu2021)"));
  }
  const bool liu = o.method == "liu2021";
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
  std::map<std::string, std::shared_ptr<AttentionSample>> attention_samples;           // liu2021
  const PrecisionPlan observe = [&](const std::string& layer) {
    QuantSpec s = QuantSpec::Float(Precision::kFp32);
    if (absl::EndsWith(layer, "attn.matmul")) {
      auto& obs = qkv_observers[layer];
      for (auto& o : obs) o = std::make_shared<RangeObserver>();
      s.q_observer = obs[0];
      s.k_observer = obs[1];
      s.v_observer = obs[2];
      if (liu) {
        s.attn_sample = attention_samples[layer] =
            std::make_shared<AttentionSample>(o.attention_matrices);
      }
      return s;
    }
    s.observer = observers.emplace(layer, std::make_shared<RangeObserver>()).first->second;
    if (liu) s.observer->KeepRows(o.search_rows);
    return s;
  };
  VITQ_ASSIGN_OR_RETURN(WeightStore store, WeightStore::FromFile(file, config.arch));
  VITQ_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, BuildModel(config, store, observe));
  for (int64_t b = 0; b < calib.dim(0); b += o.batch_size) {
    VITQ_RETURN_IF_ERROR(
        model->Forward(Slice(calib, b, std::min(o.batch_size, calib.dim(0) - b))).status());
  }
  PtqResult result;
  if (o.mixed_precision) {
    VITQ_ASSIGN_OR_RETURN(
        result.mixed_precision,
        ChooseMixedPrecision(file, config.arch, store, observers, attention_samples, o));
    for (const BlockChoice& c : result.mixed_precision) {
      for (const std::string& layer : c.layers) o.bits.layers[layer] = {c.bits, c.act_bits};
    }
  }
  // 2. Per-layer quantizers.
  // liu2021 reports every searched layer as "[i/N] name" (attention layers first).
  const size_t searched = liu ? observers.size() + attention_samples.size() : 0;
  size_t searched_done = 0;
  auto progress = [&](const std::string& layer) {
    return absl::StrCat("[", ++searched_done, "/", searched, "] ", layer);
  };
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
      if (auto sample = attention_samples.find(layer);
          sample != attention_samples.end() && sample->second->count() > 0) {
        SearchAttentionScales(progress(layer), *sample->second, o, s.attn);
      }
      VITQ_RETURN_IF_ERROR(ValidateSpec(s));
      result.layers[layer] = s;
    }
  }
  // 3. The artifact: quantized weights of integer layers, every other tensor as float.
  VITQ_ASSIGN_OR_RETURN(WeightStore reread, WeightStore::FromFile(file, config.arch));
  // liu2021: searched scales and corrected biases of every integer Linear.
  std::map<std::string, LinearChoice> choices;
  if (liu) {
    VITQ_ASSIGN_OR_RETURN(WeightStore weights, WeightStore::FromFile(file, config.arch));
    const std::map<std::string, Shape> shapes(store.taken_shapes().begin(),
                                              store.taken_shapes().end());
    for (auto& [layer, spec] : result.layers) {
      if (spec.is_attention) continue;
      const auto w_shape = shapes.find(layer + ".weight");
      if (w_shape == shapes.end()) continue;
      VITQ_ASSIGN_OR_RETURN(Tensor w, weights.Take(layer + ".weight", w_shape->second));
      std::vector<float> bias;
      if (const auto b_shape = shapes.find(layer + ".bias"); b_shape != shapes.end()) {
        VITQ_ASSIGN_OR_RETURN(Tensor b, weights.Take(layer + ".bias", b_shape->second));
        bias.assign(b.data(), b.data() + b.numel());
      }
      const RangeObserver& obs = *observers.at(layer);
      if (obs.row_len() == 0) continue;  // never ran: keep the plain calibration
      LinearChoice c = SearchLinear(progress(layer), obs.rows(), obs.row_len(), w, std::move(bias),
                                    obs, o.bits.For(layer), o);
      spec.act = c.act;
      choices[layer] = std::move(c);
    }
  }
  SafetensorsWriter writer;
  for (const auto& [name, shape] : store.taken_shapes()) {
    VITQ_ASSIGN_OR_RETURN(Tensor t, reread.Take(name, shape));
    if (absl::EndsWith(name, ".bias")) {
      auto c = choices.find(name.substr(0, name.size() - 5));
      if (c != choices.end() && !c->second.bias.empty()) {
        std::memcpy(t.data(), c->second.bias.data(), c->second.bias.size() * sizeof(float));
      }
    }
    const std::string layer =
        absl::EndsWith(name, ".weight") ? name.substr(0, name.size() - 7) : "";
    auto q = result.layers.find(layer);
    if (q == result.layers.end()) {
      writer.AddFloat(name, t);
      continue;
    }
    const int64_t n = shape[0], k = t.numel() / n;
    auto chosen = choices.find(layer);
    const WeightQuant w = chosen == choices.end()
                              ? QuantizeWeights(t.data(), n, k, q->second.weight_bits)
                              : QuantizeWeightsWithScales(t.data(), n, k, q->second.weight_bits,
                                                          chosen->second.weight_scales);
    AddQuantizedWeight(writer, layer, w);
  }
  nlohmann::ordered_json provenance = {
      {"method", o.method},
      {"settings",
       {{"percentile", o.percentile},
        {"search_candidates", o.search_candidates},
        {"search_rounds", o.search_rounds},
        {"search_rows", o.search_rows},
        {"search_act_range", o.search_from_percentile ? "percentile" : "max"},
        {"bias_correction", o.bias_correction},
        {"ranking", o.ranking},
        {"mixed_precision", o.mixed_precision},
        {"avg_bits", o.mixed.avg_bits},
        {"size_budget_mb", o.mixed.size_budget_mb},
        {"candidate_bits", o.mixed.candidate_bits},
        {"mp_act_bits", o.mixed.act_bits},
        {"mp_sensitivity",
         o.mixed.sensitivity == Sensitivity::kOutput ? "output" : "attention-map"},
        {"attention_matrices", o.attention_matrices},
        {"weight_granularity", "per_channel"},
        {"act_granularity", "per_tensor"}}},
      {"calibration", {{"data", o.calib_spec}, {"count", calib.dim(0)}, {"seed", o.seed}}},
      {"source", model_path},
      {"tool", "vitq quantize 0.1"}};
  SetArtifactMetadata(writer, config, result.layers, provenance.dump());
  VITQ_RETURN_IF_ERROR(writer.WriteFile(output));
  return result;
}

}  // namespace vitq::quant
