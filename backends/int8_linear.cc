#include <vector>

#include "backends/dnnl_util.h"
#include "backends/linear_kernels.h"
#include "backends/matmul_cache.h"
#include "backends/quantize.h"

namespace vitq {
namespace {

using dt = dnnl::memory::data_type;

// y = s_x·s_w[n]·Σ_k (q_x[m,k] − z_x)·q_w[n,k] + b[n], on oneDNN's u8×s8 matmul.
// oneDNN 2.x computes dst = oscale·(Σ + bias) for integer matmuls, so the bias is stored
// pre-divided by the output scale.
class Int8LinearKernel final : public LinearKernel {
 public:
  Int8LinearKernel(const LinearParams& params, const QuantSpec& spec, Activation activation)
      : k_(params.weight.dim(1)), act_(spec.act) {
    const int64_t n = params.weight.dim(0);
    const WeightQuant w = QuantizeLayerWeights(params, spec);
    std::vector<float> out_scales(n), bias;
    for (int64_t i = 0; i < n; ++i) out_scales[i] = act_.scale * w.scales[i];
    if (!params.bias.empty()) {
      bias.resize(n);
      for (int64_t i = 0; i < n; ++i) bias[i] = params.bias.data()[i] / out_scales[i];
    }
    const int32_t zero_point = act_.zero_point;
    LinearMatmul::Options o{
        dt::u8, dt::s8, n, k_, activation, [out_scales, zero_point](dnnl::primitive_attr& attr) {
          attr.set_output_scales(/*mask=*/1 << 1, out_scales);  // per output channel
          if (zero_point != 0) attr.set_zero_points(DNNL_ARG_SRC, 0, {zero_point});
        }};
    matmul_ = std::make_unique<LinearMatmul>(o, w.values.data(), std::move(bias));
  }

  void Forward(const float* x, int64_t m, float* y) const override { Run(x, m, y, false); }
  void ForwardAdd(const float* x, int64_t m, float* y) const override { Run(x, m, y, true); }
  std::string Describe(int64_t m) const override { return matmul_->Describe(m); }

  const ActQuant* InputGrid() const override { return &act_; }
  void ForwardCodes(const uint8_t* codes, int64_t m, float* y, bool accumulate) const override {
    matmul_->Run(codes, m, y, accumulate);
  }
  bool ForwardToCodes(const float* x, int64_t m, const ActQuant& grid,
                      uint8_t* out) const override {
    return ForwardCodesToCodes(InputCodes(x, m), m, grid, out);
  }
  bool ForwardCodesToCodes(const uint8_t* codes, int64_t m, const ActQuant& grid,
                           uint8_t* out) const override {
    matmul_->RunToCodes(codes, m, grid, out);
    return true;
  }
  bool ForwardCodesToSymmetricCodes(const uint8_t* codes, int64_t m, const float* column_scale,
                                    int bits, int8_t* out) const override {
    matmul_->RunToSymmetricCodes(codes, m, column_scale, bits, out);
    return true;
  }

 private:
  void Run(const float* x, int64_t m, float* y, bool accumulate) const {
    matmul_->Run(InputCodes(x, m), m, y, accumulate);
  }
  const uint8_t* InputCodes(const float* x, int64_t m) const {
    thread_local std::vector<uint8_t> codes;
    codes.resize(static_cast<size_t>(m * k_));
    QuantizeActivations(x, m * k_, act_, codes.data());
    return codes.data();
  }

  const int64_t k_;
  const ActQuant act_;
  std::unique_ptr<LinearMatmul> matmul_;
};

class FakeQuantLinearKernel final : public LinearKernel {
 public:
  FakeQuantLinearKernel(const LinearParams& params, const QuantSpec& spec, Activation activation)
      : k_(params.weight.dim(1)), act_(spec.act) {
    const WeightQuant w = QuantizeLayerWeights(params, spec);
    const std::vector<float> deq = DequantizeWeights(w);
    LinearParams fq{Tensor(params.weight.shape()),
                    params.bias.empty() ? Tensor() : params.bias.Clone()};
    std::copy(deq.begin(), deq.end(), fq.weight.data());
    float_kernel_ = MakeFloatLinearKernel(fq, /*bf16=*/false, activation);
  }

  void Forward(const float* x, int64_t m, float* y) const override {
    float_kernel_->Forward(FakeQuantInput(x, m), m, y);
  }
  void ForwardAdd(const float* x, int64_t m, float* y) const override {
    float_kernel_->ForwardAdd(FakeQuantInput(x, m), m, y);
  }
  std::string Describe(int64_t m) const override {
    return "fakequant+" + float_kernel_->Describe(m);
  }

 private:
  const float* FakeQuantInput(const float* x, int64_t m) const {
    thread_local std::vector<float> buffer;
    buffer.resize(static_cast<size_t>(m * k_));
    FakeQuantActivations(x, m * k_, act_, buffer.data());
    return buffer.data();
  }

  const int64_t k_;
  const ActQuant act_;
  std::unique_ptr<LinearKernel> float_kernel_;
};

}  // namespace

WeightQuant QuantizeLayerWeights(const LinearParams& params, const QuantSpec& spec) {
  const int64_t n = params.weight.dim(0), k = params.weight.dim(1);
  if (spec.weight_scales.empty())
    return QuantizeWeights(params.weight.data(), n, k, spec.weight_bits);
  return QuantizeWeightsWithScales(params.weight.data(), n, k, spec.weight_bits,
                                   spec.weight_scales);
}

std::unique_ptr<LinearKernel> MakeInt8LinearKernel(const LinearParams& params,
                                                   const QuantSpec& spec, Activation activation) {
  return std::make_unique<Int8LinearKernel>(params, spec, activation);
}

std::unique_ptr<LinearKernel> MakeFakeQuantLinearKernel(const LinearParams& params,
                                                        const QuantSpec& spec,
                                                        Activation activation) {
  return std::make_unique<FakeQuantLinearKernel>(params, spec, activation);
}

}  // namespace vitq
