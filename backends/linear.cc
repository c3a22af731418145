#include "backends/linear.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backends/bf16.h"
#include "backends/dnnl_util.h"
#include "backends/linear_kernels.h"
#include "backends/matmul_cache.h"

namespace vitq {
namespace {

using dt = dnnl::memory::data_type;

std::vector<float> BiasOf(const LinearParams& params) {
  return params.bias.empty()
             ? std::vector<float>()
             : std::vector<float>(params.bias.data(), params.bias.data() + params.bias.numel());
}

// fp32: f32 × f32 → f32.  bf16: bf16 × bf16 → f32, the input converted on the fly.
class OnednnLinearKernel final : public LinearKernel {
 public:
  OnednnLinearKernel(const LinearParams& params, dt data_type, Activation activation)
      : k_(params.weight.dim(1)), bf16_(data_type == dt::bf16) {
    LinearMatmul::Options o{data_type, data_type, params.weight.dim(0), k_, activation, nullptr};
    if (bf16_) {
      std::vector<uint16_t> w(params.weight.numel());
      FloatToBf16Array(params.weight.data(), w.data(), params.weight.numel());
      matmul_ = std::make_unique<LinearMatmul>(o, w.data(), BiasOf(params));
    } else {
      matmul_ = std::make_unique<LinearMatmul>(o, params.weight.data(), BiasOf(params));
    }
  }

  void Forward(const float* x, int64_t m, float* y) const override { Run(x, m, y, false); }
  void ForwardAdd(const float* x, int64_t m, float* y) const override { Run(x, m, y, true); }
  std::string Describe(int64_t m) const override { return matmul_->Describe(m); }

 private:
  void Run(const float* x, int64_t m, float* y, bool accumulate) const {
    if (!bf16_) return matmul_->Run(x, m, y, accumulate);
    thread_local std::vector<uint16_t> converted;
    converted.resize(static_cast<size_t>(m * k_));
    FloatToBf16Array(x, converted.data(), m * k_);
    matmul_->Run(converted.data(), m, y, accumulate);
  }

  const int64_t k_;
  const bool bf16_;
  std::unique_ptr<LinearMatmul> matmul_;
};

// Records every input in the observer, then runs the wrapped kernel (calibration).
class ObservingKernel final : public LinearKernel {
 public:
  ObservingKernel(std::unique_ptr<LinearKernel> inner, std::shared_ptr<RangeObserver> observer,
                  int64_t k)
      : inner_(std::move(inner)), observer_(std::move(observer)), k_(k) {}
  void Forward(const float* x, int64_t m, float* y) const override {
    observer_->ObserveRows(x, m, k_);
    inner_->Forward(x, m, y);
  }
  void ForwardAdd(const float* x, int64_t m, float* y) const override {
    observer_->ObserveRows(x, m, k_);
    inner_->ForwardAdd(x, m, y);
  }
  std::string Describe(int64_t m) const override { return "observe+" + inner_->Describe(m); }

 private:
  std::unique_ptr<LinearKernel> inner_;
  std::shared_ptr<RangeObserver> observer_;
  int64_t k_;
};

}  // namespace

std::unique_ptr<LinearKernel> MakeObservingKernel(std::unique_ptr<LinearKernel> inner,
                                                  std::shared_ptr<RangeObserver> observer,
                                                  int64_t in_features) {
  return std::make_unique<ObservingKernel>(std::move(inner), std::move(observer), in_features);
}

std::unique_ptr<LinearKernel> MakeFloatLinearKernel(const LinearParams& params, bool bf16,
                                                    Activation activation) {
  return std::make_unique<OnednnLinearKernel>(params, bf16 ? dt::bf16 : dt::f32, activation);
}

absl::StatusOr<std::unique_ptr<LinearKernel>> MakeLinearKernel(const LinearParams& params,
                                                               const QuantSpec& spec,
                                                               Activation activation) {
  try {
    if (spec.observer) {
      return MakeObservingKernel(MakeFloatLinearKernel(params, false, activation), spec.observer,
                                 params.weight.dim(1));
    }
    switch (spec.precision) {
      case Precision::kFp32:
        return std::make_unique<OnednnLinearKernel>(params, dt::f32, activation);
      case Precision::kBf16:
        return std::make_unique<OnednnLinearKernel>(params, dt::bf16, activation);
      case Precision::kInt8: {
        if (absl::Status s = ValidateSpec(spec); !s.ok()) return s;
        if (!spec.weight_scales.empty() &&
            static_cast<int64_t>(spec.weight_scales.size()) != params.weight.dim(0)) {
          return absl::InvalidArgumentError(absl::StrCat(spec.weight_scales.size(),
                                                         " weight scales for ",
                                                         params.weight.dim(0), " output channels"));
        }
        if (spec.fake_quant) return MakeFakeQuantLinearKernel(params, spec, activation);
        // At 2–4 bits our kernel keeps the weights packed; oneDNN would need them as s8. 5–7-bit
        // codes run on oneDNN's s8 path (their packed form saves only disk).
        if (spec.weight_bits <= 4) return MakeLowBitLinearKernel(params, spec, activation);
        return MakeInt8LinearKernel(params, spec, activation);
      }
    }
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN: ", e.what()));
  }
  return absl::UnimplementedError(
      absl::StrCat("no kernel for precision ", PrecisionName(spec.precision)));
}

void LinearKernel::ForwardCodes(const uint8_t*, int64_t, float*, bool) const {
  // Callers check InputGrid() first; reaching this is a programming error.
  std::fprintf(stderr, "vitq: ForwardCodes on a kernel without an input grid\n");
  std::abort();
}

absl::StatusOr<Linear> Linear::Create(std::string name, LinearParams params, const QuantSpec& spec,
                                      Activation activation) {
  if (params.weight.rank() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".weight: expected 2 dimensions, found ",
                                                   ShapeToString(params.weight.shape())));
  }
  if (!params.bias.empty() &&
      (params.bias.rank() != 1 || params.bias.dim(0) != params.weight.dim(0))) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".bias: expected [", params.weight.dim(0),
                                                   "], found ",
                                                   ShapeToString(params.bias.shape())));
  }
  absl::StatusOr<std::unique_ptr<LinearKernel>> kernel = MakeLinearKernel(params, spec, activation);
  if (!kernel.ok())
    return absl::Status(kernel.status().code(),
                        absl::StrCat(name, ": ", kernel.status().message()));
  Linear layer;
  layer.name_ = std::move(name);
  layer.out_features_ = params.weight.dim(0);
  layer.in_features_ = params.weight.dim(1);
  layer.spec_ = spec;
  layer.kernel_ = std::move(*kernel);
  return layer;
}

Tensor Linear::Forward(const Tensor& x) const {
  Shape out_shape = x.shape();
  out_shape.back() = out_features_;
  Tensor y(out_shape);
  Forward(x.data(), x.numel() / in_features_, y.data());
  return y;
}

}  // namespace vitq
