// The LinearKernel of integer layers with 2-, 3- or 4-bit weights: LowBitGemm behind the input
// quantizer.
#include <vector>

#include "absl/strings/str_cat.h"
#include "backends/linear_kernels.h"
#include "backends/lowbit_gemm.h"
#include "backends/quantize.h"

namespace vitq {
namespace {

class LowBitLinearKernel final : public LinearKernel {
 public:
  LowBitLinearKernel(LowBitGemm gemm, const ActQuant& act, Activation activation)
      : gemm_(std::move(gemm)), act_(act), activation_(activation) {}

  void Forward(const float* x, int64_t m, float* y) const override { Run(x, m, y, false); }
  void ForwardAdd(const float* x, int64_t m, float* y) const override { Run(x, m, y, true); }
  std::string Describe(int64_t /*m*/) const override {
    return absl::StrCat("lowbit:w", gemm_.weights().bits(), ":", LowBitIsaName(ActiveLowBitIsa()));
  }

  // Codes of width K are taken as they are only when K needs no padding to whole tiles.
  const ActQuant* InputGrid() const override {
    return gemm_.padded_k() == gemm_.k() ? &act_ : nullptr;
  }
  void ForwardCodes(const uint8_t* codes, int64_t m, float* y, bool accumulate) const override {
    gemm_.Run(codes, m, y, activation_, accumulate);
  }
  bool ForwardToCodes(const float* x, int64_t m, const ActQuant& grid,
                      uint8_t* out) const override {
    gemm_.RunToCodes(InputCodes(x, m), m, activation_, grid, out);
    return true;
  }
  bool ForwardCodesToCodes(const uint8_t* codes, int64_t m, const ActQuant& grid,
                           uint8_t* out) const override {
    gemm_.RunToCodes(codes, m, activation_, grid, out);
    return true;
  }

 private:
  void Run(const float* x, int64_t m, float* y, bool accumulate) const {
    gemm_.Run(InputCodes(x, m), m, y, activation_, accumulate);
  }
  const uint8_t* InputCodes(const float* x, int64_t m) const {
    thread_local std::vector<uint8_t> codes;  // (m, padded K) u8
    codes.resize(static_cast<size_t>(m * gemm_.padded_k()));
    QuantizeActivationsPadded(x, m, gemm_.k(), gemm_.padded_k(), act_, codes.data());
    return codes.data();
  }

  const LowBitGemm gemm_;
  const ActQuant act_;
  const Activation activation_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LinearKernel>> MakeLowBitLinearKernel(const LinearParams& params,
                                                                     const QuantSpec& spec,
                                                                     Activation activation) {
  const WeightQuant w = QuantizeLayerWeights(params, spec);
  std::vector<float> bias;
  if (!params.bias.empty())
    bias.assign(params.bias.data(), params.bias.data() + params.bias.numel());
  absl::StatusOr<LowBitGemm> gemm = LowBitGemm::Create(w, spec.act, std::move(bias));
  if (!gemm.ok()) return gemm.status();
  return std::make_unique<LowBitLinearKernel>(*std::move(gemm), spec.act, activation);
}

}  // namespace vitq
