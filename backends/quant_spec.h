// QuantSpec: the precision of one GEMM-bearing layer (a Linear or an attention matmul).
//
// Precision is a per-layer property: the model code calls layer.Forward() and the
// layer's kernel follows from its QuantSpec. Quantized fields (bits, scales, zero
// points) extend this struct as the integer kernels land; a model built with all
// layers at kFp32 is the reference.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace vitq {

enum class Precision {
  kFp32,  // fp32 weights and activations (oneDNN brgemm / sgemm)
  kBf16,  // bf16 weights and activations, fp32 accumulation and output (AVX512-BF16 / AMX)
};

std::string PrecisionName(Precision p);  // "fp32", "bf16"
absl::StatusOr<Precision> ParsePrecision(const std::string& name);

struct QuantSpec {
  Precision precision = Precision::kFp32;
};

// Chooses the QuantSpec of each layer by its checkpoint-style name, e.g.
// "blocks.3.attn.qkv", "blocks.3.attn.matmul" (the two attention matmuls), "head".
using PrecisionPlan = std::function<QuantSpec(const std::string& layer_name)>;

// Every layer at `p`.
PrecisionPlan UniformPlan(Precision p);

}  // namespace vitq
