#include "backends/linear.h"

#include <map>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backends/bf16.h"
#include "backends/dnnl_util.h"
#include "backends/linear_kernels.h"

namespace vitq {
namespace {

using dnnl::memory;
using dt = dnnl::memory::data_type;

// One oneDNN matmul per row count M, created on first use with weights in the layout
// oneDNN prefers (reordered once and shared by every M that prefers the same layout).
// fp32: f32 × f32 → f32.  bf16: bf16 × bf16 → f32, the input converted on the fly.
class OnednnLinearKernel final : public LinearKernel {
 public:
  OnednnLinearKernel(const LinearParams& params, dt data_type, Activation activation)
      : n_(params.weight.dim(0)),
        k_(params.weight.dim(1)),
        dt_(data_type),
        activation_(activation) {
    const int64_t count = n_ * k_;
    if (dt_ == dt::bf16) {
      plain_weight_ = AlignedArray<uint8_t>(count * 2);
      FloatToBf16Array(params.weight.data(), reinterpret_cast<uint16_t*>(plain_weight_.get()),
                       count);
    } else {
      plain_weight_ = AlignedArray<uint8_t>(count * 4);
      std::memcpy(plain_weight_.get(), params.weight.data(), count * 4);
    }
    if (!params.bias.empty()) {
      bias_ = AlignedArray<float>(n_);
      std::memcpy(bias_.get(), params.bias.data(), n_ * 4);
    }
  }

  void Forward(const float* x, int64_t m, float* y) const override { Run(x, m, y, false); }
  void ForwardAdd(const float* x, int64_t m, float* y) const override { Run(x, m, y, true); }

  std::string Describe(int64_t m) const override {
    return dnnl_util::ImplName(EntryFor(m, false).pd);
  }

 private:
  struct Entry {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul prim;
    std::shared_ptr<memory> weights;
  };

  void Run(const float* x, int64_t m, float* y, bool accumulate) const {
    const Entry& e = EntryFor(m, accumulate);
    auto& eng = dnnl_util::Engine();
    const void* src = x;
    if (dt_ == dt::bf16) {
      thread_local std::vector<uint16_t> converted;
      converted.resize(static_cast<size_t>(m * k_));
      FloatToBf16Array(x, converted.data(), m * k_);
      src = converted.data();
    }
    memory src_m(e.pd.src_desc(), eng, const_cast<void*>(src));
    memory dst_m(e.pd.dst_desc(), eng, y);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src_m},
                                         {DNNL_ARG_WEIGHTS, *e.weights},
                                         {DNNL_ARG_DST, dst_m},
                                         {DNNL_ARG_SCRATCHPAD, dnnl_util::ThreadScratchpad(e.pd)}};
    if (bias_) args.emplace(DNNL_ARG_BIAS, memory(e.pd.bias_desc(), eng, bias_.get()));
    e.prim.execute(dnnl_util::ThreadStream(), args);
    dnnl_util::ThreadStream().wait();
  }

  // accumulate: a sum post-op adds the previous contents of y (the residual stream).
  const Entry& EntryFor(int64_t m, bool accumulate) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find({m, accumulate});
    if (it != entries_.end()) return it->second;
    auto& eng = dnnl_util::Engine();
    memory::desc src_md = dnnl_util::PlainDesc({m, k_}, dt_);
    memory::desc w_any({k_, n_}, dt_, memory::format_tag::any);
    memory::desc dst_md = dnnl_util::PlainDesc({m, n_}, dt::f32);
    dnnl::primitive_attr attr = dnnl_util::BaseAttr();
    dnnl::post_ops ops;
    if (activation_ == Activation::kGelu)
      ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
    if (accumulate) ops.append_sum(1.0f);
    attr.set_post_ops(ops);
    dnnl::matmul::desc desc =
        bias_ ? dnnl::matmul::desc(src_md, w_any, dnnl_util::PlainDesc({1, n_}, dt::f32), dst_md)
              : dnnl::matmul::desc(src_md, w_any, dst_md);
    dnnl::matmul::primitive_desc pd(desc, attr, eng);
    Entry entry{pd, dnnl::matmul(pd), WeightsIn(pd.weights_desc())};
    return entries_.emplace(std::make_pair(m, accumulate), std::move(entry)).first->second;
  }

  // Weights reordered into `md`, shared by all M whose primitive wants that layout.
  std::shared_ptr<memory> WeightsIn(const memory::desc& md) const {
    for (auto& [desc, mem] : weights_by_layout_) {
      if (desc == md) return mem;
    }
    auto& eng = dnnl_util::Engine();
    // Our weight is (N, K) row-major, i.e. the (K, N) matrix oneDNN wants, transposed.
    memory plain(memory::desc({k_, n_}, dt_, memory::format_tag::ba), eng, plain_weight_.get());
    auto reordered = std::make_shared<memory>(md, eng);
    dnnl::reorder(plain, *reordered).execute(dnnl_util::ThreadStream(), plain, *reordered);
    dnnl_util::ThreadStream().wait();
    weights_by_layout_.emplace_back(md, reordered);
    return reordered;
  }

  const int64_t n_, k_;
  const dt dt_;
  const Activation activation_;
  std::unique_ptr<uint8_t[], AlignedDeleter> plain_weight_;
  std::unique_ptr<float[], AlignedDeleter> bias_;
  mutable std::mutex mu_;
  mutable std::map<std::pair<int64_t, bool>, Entry> entries_;  // guarded by mu_
  mutable std::vector<std::pair<memory::desc, std::shared_ptr<memory>>> weights_by_layout_;  // mu_
};

// Records every input in the observer, then runs the wrapped kernel (calibration).
class ObservingKernel final : public LinearKernel {
 public:
  ObservingKernel(std::unique_ptr<LinearKernel> inner, std::shared_ptr<RangeObserver> observer,
                  int64_t k)
      : inner_(std::move(inner)), observer_(std::move(observer)), k_(k) {}
  void Forward(const float* x, int64_t m, float* y) const override {
    observer_->Observe(x, m * k_);
    inner_->Forward(x, m, y);
  }
  void ForwardAdd(const float* x, int64_t m, float* y) const override {
    observer_->Observe(x, m * k_);
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
        return spec.fake_quant ? MakeFakeQuantLinearKernel(params, spec, activation)
                               : MakeInt8LinearKernel(params, spec, activation);
      }
    }
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN: ", e.what()));
  }
  return absl::UnimplementedError(
      absl::StrCat("no kernel for precision ", PrecisionName(spec.precision)));
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
