// The LinearKernel implementations behind MakeLinearKernel (backends/linear.h).
#pragma once

#include <memory>

#include "backends/linear.h"

namespace vitq {

// oneDNN fp32 or bf16 matmul.
std::unique_ptr<LinearKernel> MakeFloatLinearKernel(const LinearParams& params, bool bf16,
                                                    Activation activation);

// oneDNN int8 matmul: the input is quantized to u8 with spec.act, weights are s8 per output
// channel (values on the spec.weight_bits grid), scales and zero point fixed when each
// primitive is created (runtime scales fall off the VNNI/AMX brgemm path: ONEDNN.md).
std::unique_ptr<LinearKernel> MakeInt8LinearKernel(const LinearParams& params,
                                                   const QuantSpec& spec, Activation activation);

// Integer layers with 2-, 3- or 4-bit weights (spec.weight_bits < 8): LowBitGemm
// (backends/lowbit_gemm.h), weights kept packed at bits/8 bytes each, the same math as
// MakeInt8LinearKernel. INVALID_ARGUMENT for other weight widths.
absl::StatusOr<std::unique_ptr<LinearKernel>> MakeLowBitLinearKernel(const LinearParams& params,
                                                                     const QuantSpec& spec,
                                                                     Activation activation);

// The fp32 simulation of the same quantizers: fake-quantized input and dequantized weights
// through the fp32 kernel. The oracle the integer kernels are tested against.
std::unique_ptr<LinearKernel> MakeFakeQuantLinearKernel(const LinearParams& params,
                                                        const QuantSpec& spec,
                                                        Activation activation);

// Feeds every input to `observer`, then runs `inner` (calibration).
std::unique_ptr<LinearKernel> MakeObservingKernel(std::unique_ptr<LinearKernel> inner,
                                                  std::shared_ptr<RangeObserver> observer,
                                                  int64_t in_features);

// Weights of `params` quantized as `spec` says (given scales, or max-abs per channel).
WeightQuant QuantizeLayerWeights(const LinearParams& params, const QuantSpec& spec);

}  // namespace vitq
