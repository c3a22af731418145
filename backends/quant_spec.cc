#include "backends/quant_spec.h"

#include "absl/strings/str_cat.h"

namespace vitq {

std::string PrecisionName(Precision p) {
  switch (p) {
    case Precision::kFp32:
      return "fp32";
    case Precision::kBf16:
      return "bf16";
  }
  return "?";
}

absl::StatusOr<Precision> ParsePrecision(const std::string& name) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown precision '", name, "' (expected fp32 or bf16)"));
}

PrecisionPlan UniformPlan(Precision p) {
  return [p](const std::string&) { return QuantSpec{p}; };
}

}  // namespace vitq
