#include "backends/quant_spec.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace vitq {

std::string PrecisionName(Precision p) {
  switch (p) {
    case Precision::kFp32:
      return "fp32";
    case Precision::kBf16:
      return "bf16";
    case Precision::kInt8:
      return "int8";
  }
  return "?";
}

absl::StatusOr<Precision> ParsePrecision(const std::string& name) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown precision '", name, "' (expected fp32 or bf16)"));
}

bool IsEdgeLayer(const std::string& layer) {
  return layer == "patch_embed.proj" || layer == "head" || layer == "head_dist" ||
         layer == "head.fc";
}

std::string SpecName(const QuantSpec& spec) {
  if (spec.precision != Precision::kInt8) return PrecisionName(spec.precision);
  if (spec.is_attention) {
    return absl::StrCat("a", spec.attn.qkv_bits, "p", spec.attn.probs_bits,
                        spec.fake_quant ? "-fakequant" : "");
  }
  return absl::StrCat("w", spec.weight_bits, "a", spec.act.bits,
                      spec.fake_quant ? "-fakequant" : "");
}

absl::Status ValidateAttentionSpec(const QuantSpec::Attention& a) {
  for (int bits : {a.qkv_bits, a.probs_bits}) {
    if (bits < 2 || bits > 8)
      return absl::InvalidArgumentError(
          absl::StrCat("attention bits must be in [2, 8], got ", bits));
  }
  for (float s : {a.q_scale, a.k_scale, a.v_scale}) {
    if (!(s > 0) || !std::isfinite(s)) {
      return absl::InvalidArgumentError(
          absl::StrCat("attention q/k/v scale must be positive and finite, got ", s));
    }
  }
  if (!(a.probs_scale >= 0) || !std::isfinite(a.probs_scale)) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention probs_scale must be positive and finite, got ", a.probs_scale));
  }
  if (!(a.rectify_eps > 0) || !std::isfinite(a.rectify_eps)) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention rectification eps must be positive, got ", a.rectify_eps));
  }
  return absl::OkStatus();
}

absl::Status ValidateSpec(const QuantSpec& spec) {
  if (spec.precision != Precision::kInt8) return absl::OkStatus();
  if (spec.is_attention) return ValidateAttentionSpec(spec.attn);
  if (spec.weight_bits < 2 || spec.weight_bits > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight bits must be in [2, 8], got ", spec.weight_bits));
  }
  if (spec.act.bits < 2 || spec.act.bits > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation bits must be in [2, 8], got ", spec.act.bits));
  }
  if (!(spec.act.scale > 0) || !std::isfinite(spec.act.scale)) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation scale must be positive and finite, got ", spec.act.scale));
  }
  if (spec.act.zero_point < 0 || spec.act.zero_point > spec.act.qmax()) {
    return absl::InvalidArgumentError(absl::StrCat("activation zero point ", spec.act.zero_point,
                                                   " outside [0, ", spec.act.qmax(), "]"));
  }
  for (float s : spec.weight_scales) {
    if (!(s > 0) || !std::isfinite(s)) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight scale must be positive and finite, got ", s));
    }
  }
  return absl::OkStatus();
}

PrecisionPlan UniformPlan(Precision p) {
  return [p](const std::string&) { return QuantSpec::Float(p); };
}

}  // namespace vitq
