// Linear: y = x·Wᵀ + b with an optional fused GELU, at the precision its QuantSpec names.
//
// The layer owns a LinearKernel chosen from the QuantSpec when the model is built; the
// model code only calls Forward(). Kernels for new precisions (int8, low-bit) implement
// LinearKernel and are picked in MakeLinearKernel; no model code changes.
//
// Thread safety: Forward may run from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "backends/quant_spec.h"
#include "backends/tensor.h"

namespace vitq {

enum class Activation { kNone, kGelu };

// Full-precision parameters of a linear layer, as read from a checkpoint.
struct LinearParams {
  Tensor weight;  // (out_features, in_features)
  Tensor bias;    // (out_features) or empty
};

class LinearKernel {
 public:
  virtual ~LinearKernel() = default;
  // x: (m, K) row-major; y: (m, N) row-major, float32.
  virtual void Forward(const float* x, int64_t m, float* y) const = 0;
  // y += x·Wᵀ + b (a residual add fused into the GEMM where the kernel can).
  virtual void ForwardAdd(const float* x, int64_t m, float* y) const = 0;
  // The implementation that runs for `m` rows (e.g. "brg:avx512_core"), for logs and tests.
  virtual std::string Describe(int64_t m) const = 0;

  // Integer kernels that read u8 codes name the grid of their input here; null otherwise. A
  // layer feeding this one can then hand over codes (ForwardToCodes) instead of floats.
  virtual const ActQuant* InputGrid() const { return nullptr; }
  // y (+)= the layer applied to `codes` (m, K) on InputGrid(). Only for kernels with an InputGrid.
  virtual void ForwardCodes(const uint8_t* codes, int64_t m, float* y, bool accumulate) const;
  // The output (m, N) quantized onto `grid` (the next layer's input grid), the requantization
  // fused into the GEMM. False, with nothing written, when the kernel cannot.
  virtual bool ForwardToCodes(const float* /*x*/, int64_t /*m*/, const ActQuant& /*grid*/,
                              uint8_t* /*codes*/) const {
    return false;
  }
  // The same from input codes (m, K) on InputGrid(): codes in, codes out. Like ForwardCodes, only
  // for kernels with an InputGrid.
  virtual bool ForwardCodesToCodes(const uint8_t* /*codes*/, int64_t /*m*/,
                                   const ActQuant& /*grid*/, uint8_t* /*out*/) const {
    return false;
  }
  // From input codes on InputGrid(): the output (m, N) as symmetric signed codes,
  // clamp(round(y · column_scale[n]), −(2^(bits−1) − 1), 2^(bits−1) − 1), in the epilogue (qkv
  // straight into the integer attention's q, k, v). False, with nothing written, when the
  // kernel cannot.
  virtual bool ForwardCodesToSymmetricCodes(const uint8_t* /*codes*/, int64_t /*m*/,
                                            const float* /*column_scale*/, int /*bits*/,
                                            int8_t* /*out*/) const {
    return false;
  }
};

absl::StatusOr<std::unique_ptr<LinearKernel>> MakeLinearKernel(const LinearParams& params,
                                                               const QuantSpec& spec,
                                                               Activation activation);

class Linear {
 public:
  Linear() = default;
  // Validates shapes (bias length == out_features) and builds the kernel.
  static absl::StatusOr<Linear> Create(std::string name, LinearParams params, const QuantSpec& spec,
                                       Activation activation = Activation::kNone);

  // x: (m, in_features) → y: (m, out_features).
  void Forward(const float* x, int64_t m, float* y) const { kernel_->Forward(x, m, y); }
  // y += x·Wᵀ + b.
  void ForwardAdd(const float* x, int64_t m, float* y) const { kernel_->ForwardAdd(x, m, y); }
  // x: (..., in_features) → (..., out_features).
  Tensor Forward(const Tensor& x) const;
  // Integer hand-over between layers (see LinearKernel).
  const ActQuant* InputGrid() const { return kernel_->InputGrid(); }
  void ForwardCodes(const uint8_t* codes, int64_t m, float* y, bool accumulate) const {
    kernel_->ForwardCodes(codes, m, y, accumulate);
  }
  bool ForwardToCodes(const float* x, int64_t m, const ActQuant& grid, uint8_t* codes) const {
    return kernel_->ForwardToCodes(x, m, grid, codes);
  }
  bool ForwardCodesToCodes(const uint8_t* codes, int64_t m, const ActQuant& grid,
                           uint8_t* out) const {
    return kernel_->ForwardCodesToCodes(codes, m, grid, out);
  }
  bool ForwardCodesToSymmetricCodes(const uint8_t* codes, int64_t m, const float* column_scale,
                                    int bits, int8_t* out) const {
    return kernel_->ForwardCodesToSymmetricCodes(codes, m, column_scale, bits, out);
  }

  const std::string& name() const { return name_; }
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  const QuantSpec& spec() const { return spec_; }
  std::string Describe(int64_t m) const { return kernel_->Describe(m); }

 private:
  std::string name_;
  int64_t in_features_ = 0;
  int64_t out_features_ = 0;
  QuantSpec spec_;
  std::shared_ptr<const LinearKernel> kernel_;
};

}  // namespace vitq
