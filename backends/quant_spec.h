// QuantSpec: the precision of one GEMM-bearing layer (a Linear or an attention matmul).
//
// Precision is a per-layer property: the model code calls layer.Forward() and the
// layer's kernel follows from its QuantSpec. Quantized fields (bits, scales, zero
// points) extend this struct as the integer kernels land; a model built with all
// layers at kFp32 is the reference.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/observer.h"
#include "backends/quantize.h"

namespace vitq {

enum class Precision {
  kFp32,  // fp32 weights and activations (oneDNN brgemm / sgemm)
  kBf16,  // bf16 weights and activations, fp32 accumulation and output (AVX512-BF16 / AMX)
  kInt8,  // integer weights (2..8 bits, per channel) × integer activations (8/4 bits, per
          // tensor)
};

std::string PrecisionName(Precision p);  // "fp32", "bf16"
absl::StatusOr<Precision> ParsePrecision(const std::string& name);

struct QuantSpec {
  Precision precision = Precision::kFp32;
  // kInt8 only:
  int weight_bits = 8;               // 2..8; symmetric per output channel
  std::vector<float> weight_scales;  // per output channel; empty: max-abs of the weights
  ActQuant act;                      // the layer input's quantizer (2..8 bits, calibrated)
  bool fake_quant = false;           // run the fp32 simulation of these quantizers (the oracle)
  // Calibration: run in fp32 and record the layer's inputs (any precision).
  std::shared_ptr<RangeObserver> observer;

  // Attention matmuls (layer "<block>.attn.matmul") at kInt8: q (already × 1/√d), k and v
  // quantized symmetric per tensor to `qkv_bits`, the softmax output unsigned to `probs_bits`
  // with scale `probs_scale` (default 1/(2^probs_bits − 1), the whole [0, 1]); QKᵀ and
  // softmax·V run on integer operands.
  struct Attention {
    int qkv_bits = 8;
    int probs_bits = 8;
    float q_scale = 0, k_scale = 0, v_scale = 0;
    float probs_scale = 0;  // 0: 1/(2^probs_bits − 1); a learned (Q-ViT) scale clips large probs
    // Q-ViT's information rectification (IRM) of q and k before they are quantized: per token
    // and head, (x − mean) / sqrt(var + eps) over the head's channels, then × weight + bias
    // (per head and channel, [heads·head_dim] row-major; artifact tensors
    // <block>.attn.{q,k}_norm.{weight,bias} of shape [heads, head_dim]).
    bool rectify = false;
    float rectify_eps = 1e-5f;
    std::vector<float> q_norm_weight, q_norm_bias, k_norm_weight, k_norm_bias;
    float ProbsScale() const {
      return probs_scale > 0 ? probs_scale : 1.0f / static_cast<float>((1 << probs_bits) - 1);
    }
  };
  bool is_attention = false;
  Attention attn;
  // Calibration of attention matmuls: observers of q (× 1/√d), k and v.
  std::shared_ptr<RangeObserver> q_observer, k_observer, v_observer;
  // ... and a sample of whole per-head q, k, v for the liu2021 attention search.
  std::shared_ptr<AttentionSample> attn_sample;

  static QuantSpec Float(Precision p) {  // an fp32 or bf16 layer
    QuantSpec spec;
    spec.precision = p;
    return spec;
  }
};

// "w8a8" style name of an integer spec, PrecisionName otherwise.
std::string SpecName(const QuantSpec& spec);
absl::Status ValidateSpec(const QuantSpec& spec);

// The patch embedding and the classifier heads ("patch_embed.proj", "head", "head_dist",
// "head.fc"): the layers PTQ and QAT keep at their own (8-bit by default) precision.
bool IsEdgeLayer(const std::string& layer);

// Chooses the QuantSpec of each layer by its checkpoint-style name, e.g.
// "blocks.3.attn.qkv", "blocks.3.attn.matmul" (the two attention matmuls), "head".
using PrecisionPlan = std::function<QuantSpec(const std::string& layer_name)>;

// Every layer at `p`.
PrecisionPlan UniformPlan(Precision p);

}  // namespace vitq
