#include "quant/mixed_precision.h"

#include <algorithm>
#include <cmath>
#include <opencv2/core.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "backends/quantize.h"
#include "quant/liu2021.h"

namespace vitq::quant {
namespace {

struct BlockParts {
  std::vector<std::string> linears;
  std::string attention;  // "<block>.matmul" or empty
};

// Mean squared difference per row of two (rows, cols) matrices.
double MeanRowSquaredError(const std::vector<float>& a, const std::vector<float>& b, int64_t rows) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return rows > 0 ? sum / static_cast<double>(rows) : 0.0;
}

std::vector<float> FloatOutputs(const LinearSample& s, const std::vector<float>& x) {
  const int64_t n = s.weight.dim(0), m = static_cast<int64_t>(x.size()) / s.k;
  const liu2021::LinearLayer layer{
      x, std::span<const float>(s.weight.data(), static_cast<size_t>(n * s.k)), s.bias, m, s.k, n};
  return liu2021::QuantizedOutput(layer, 0, 8, 0, 8);
}

// The activation bits that go with weight bits `bits` (MixedPrecisionOptions::act_bits).
int ActBits(int bits, int act_bits) { return act_bits > 0 ? act_bits : bits; }

// Adds to errors[i] the Linear's output error with the engine's max-based quantizers at
// candidate_bits[i] (weights; activations too unless act_bits fixes them).
void AddLinearErrors(const LinearSample& s, const std::vector<int>& candidate_bits, int act_bits,
                     std::vector<double>& errors) {
  const int64_t n = s.weight.dim(0), m = static_cast<int64_t>(s.rows.size()) / s.k;
  const std::vector<float> reference = FloatOutputs(s, s.rows);
  std::vector<float> x_hat(s.rows.size());
  for (size_t i = 0; i < candidate_bits.size(); ++i) {
    const int bits = candidate_bits[i];
    const std::vector<float> w_hat =
        DequantizeWeights(QuantizeWeights(s.weight.data(), n, s.k, bits));
    FakeQuantActivations(s.rows.data(), static_cast<int64_t>(s.rows.size()),
                         ActQuantFromRange(s.min, s.max, ActBits(bits, act_bits)), x_hat.data());
    const liu2021::LinearLayer layer{x_hat, w_hat, s.bias, m, s.k, n};
    errors[i] += MeanRowSquaredError(reference, liu2021::QuantizedOutput(layer, 0, 8, 0, 8), m);
  }
}

liu2021::AttentionOperands Operands(const AttentionSample& a) {
  return {a.q(), a.k(), a.v(), a.bias(), a.count(), a.tokens(), a.head_dim()};
}

// Likewise for the attention's output with max-based q, k, v and softmax-output quantizers.
void AddAttentionErrors(const AttentionSample& sample, const std::vector<int>& candidate_bits,
                        int act_bits, std::vector<double>& errors) {
  const liu2021::AttentionOperands a = Operands(sample);
  const std::vector<float> reference =
      liu2021::AttentionOutput(a, liu2021::AttentionScores(a, 0, 0, 8), 0, 8, 0, 8);
  for (size_t i = 0; i < candidate_bits.size(); ++i) {
    const int bits = ActBits(candidate_bits[i], act_bits);  // its operands are activations
    const auto q = static_cast<float>(liu2021::InitialStep(a.q, bits));
    const auto k = static_cast<float>(liu2021::InitialStep(a.k, bits));
    const auto v = static_cast<float>(liu2021::InitialStep(a.v, bits));
    const std::vector<float> quantized =
        liu2021::AttentionOutput(a, liu2021::AttentionScores(a, q, k, bits),
                                 1.0f / static_cast<float>((1 << bits) - 1), bits, v, bits);
    errors[i] += MeanRowSquaredError(reference, quantized, a.count * a.tokens);
  }
}

// Mean over the sampled heads of the attention map's nuclear norm per row.
double AttentionSensitivity(const AttentionSample& sample) {
  const liu2021::AttentionOperands a = Operands(sample);
  const int64_t n = a.tokens;
  const std::vector<float> probs = liu2021::SoftmaxRows(liu2021::AttentionScores(a, 0, 0, 8), n);
  double total = 0;
  for (int64_t m = 0; m < a.count; ++m) total += NuclearNorm(&probs[m * n * n], n, n) / n;
  return a.count > 0 ? total / a.count : 0.0;
}

double OutputSensitivity(const LinearSample& s) {
  const std::vector<float> y = FloatOutputs(s, s.rows);
  const int64_t m = static_cast<int64_t>(s.rows.size()) / s.k;
  return m > 0 ? NuclearNorm(y.data(), m, s.weight.dim(0)) / m : 0.0;
}

// The Linear whose output is the block's output: attn.proj, mlp.fc2, or the only one.
const std::string& OutputLayer(const std::vector<std::string>& layers) {
  for (const std::string& l : layers) {
    if (absl::EndsWith(l, ".proj") || absl::EndsWith(l, ".fc2")) return l;
  }
  return layers.back();
}

}  // namespace

std::string BlockOf(const std::string& layer) {
  for (const char* part : {".attn.", ".mlp."}) {
    const size_t at = layer.rfind(part);
    if (at != std::string::npos) return layer.substr(0, at + std::string(part).size() - 1);
  }
  return layer;
}

double NuclearNorm(const float* m, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return 0.0;
  const cv::Mat a(static_cast<int>(rows), static_cast<int>(cols), CV_32F, const_cast<float*>(m));
  cv::Mat singular;
  cv::SVD::compute(a, singular, cv::SVD::NO_UV);
  return cv::sum(singular)[0];
}

absl::StatusOr<std::vector<BlockChoice>> AssignMixedPrecision(
    const std::map<std::string, LinearSample>& linears,
    const std::map<std::string, const AttentionSample*>& attentions,
    const MixedPrecisionOptions& o) {
  if (o.candidate_bits.empty()) return absl::InvalidArgumentError("no candidate bit-widths");
  std::map<std::string, BlockParts> parts;
  for (const auto& [name, sample] : linears) parts[BlockOf(name)].linears.push_back(name);
  for (const auto& [name, sample] : attentions) parts[BlockOf(name)].attention = name;
  std::vector<BlockChoice> choices;
  std::vector<liu2021::Block> blocks;
  int64_t block_parameters = 0;
  for (const auto& [block, p] : parts) {
    BlockChoice c;
    c.block = block;
    c.layers = p.linears;
    if (!p.attention.empty()) c.layers.push_back(p.attention);
    for (const std::string& l : p.linears) c.parameters += linears.at(l).weight.numel();
    // σ: the attention map for attention blocks (the paper's), or the block's output feature
    // (its proj / fc2 / only Linear) for every block.
    if (!p.attention.empty() && o.sensitivity == Sensitivity::kAttentionMap) {
      c.sensitivity = AttentionSensitivity(*attentions.at(p.attention));
    } else if (!p.linears.empty()) {
      c.sensitivity = OutputSensitivity(linears.at(OutputLayer(p.linears)));
    }
    c.error.assign(o.candidate_bits.size(), 0.0);
    for (const std::string& l : p.linears)
      AddLinearErrors(linears.at(l), o.candidate_bits, o.act_bits, c.error);
    if (!p.attention.empty())
      AddAttentionErrors(*attentions.at(p.attention), o.candidate_bits, o.act_bits, c.error);
    block_parameters += c.parameters;
    blocks.push_back({c.sensitivity, c.parameters, o.candidate_bits, c.error});
    choices.push_back(std::move(c));
  }
  int64_t budget = 0;
  if (o.avg_bits > 0) {
    budget = static_cast<int64_t>(std::floor(o.avg_bits * static_cast<double>(block_parameters)));
  } else if (o.size_budget_mb > 0) {
    budget = static_cast<int64_t>(o.size_budget_mb * 8e6) - o.fixed_bits;
    if (budget <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("size budget ", o.size_budget_mb, " MB is below the ", o.fixed_bits / 8e6,
                       " MB that the float tensors, scales and 8-bit edge layers take alone"));
    }
  } else {
    return absl::InvalidArgumentError("mixed precision needs --avg-bits or --size-budget-mb");
  }
  auto picked = liu2021::PickBits(blocks, budget);
  if (!picked.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("mixed precision: ", picked.status().message()));
  }
  for (size_t b = 0; b < choices.size(); ++b) {
    choices[b].bits = o.candidate_bits[(*picked)[b]];
    choices[b].act_bits = ActBits(choices[b].bits, o.act_bits);
  }
  return choices;
}

}  // namespace vitq::quant
