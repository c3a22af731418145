#include <map>
#include <mutex>
#include <vector>

#include "backends/dnnl_util.h"
#include "backends/linear_kernels.h"
#include "backends/quantize.h"

namespace vitq {
namespace {

using dnnl::memory;
using dt = dnnl::memory::data_type;

// y = s_x·s_w[n]·Σ_k (q_x[m,k] − z_x)·q_w[n,k] + b[n], on oneDNN's u8×s8 matmul.
// oneDNN 2.x computes dst = oscale·(Σ + bias) for integer matmuls, so the bias is stored
// pre-divided by the output scale.
class Int8LinearKernel final : public LinearKernel {
 public:
  Int8LinearKernel(const LinearParams& params, const QuantSpec& spec, Activation activation)
      : n_(params.weight.dim(0)),
        k_(params.weight.dim(1)),
        act_(spec.act),
        activation_(activation) {
    WeightQuant w = QuantizeLayerWeights(params, spec);
    weights_s8_ = std::move(w.values);
    out_scales_.resize(n_);
    for (int64_t i = 0; i < n_; ++i) out_scales_[i] = act_.scale * w.scales[i];
    if (!params.bias.empty()) {
      bias_.resize(n_);
      for (int64_t i = 0; i < n_; ++i) bias_[i] = params.bias.data()[i] / out_scales_[i];
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
    thread_local std::vector<uint8_t> codes;
    codes.resize(static_cast<size_t>(m * k_));
    QuantizeActivations(x, m * k_, act_, codes.data());
    auto& eng = dnnl_util::Engine();
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(e.pd.src_desc(), eng, codes.data())},
                                         {DNNL_ARG_WEIGHTS, *e.weights},
                                         {DNNL_ARG_DST, memory(e.pd.dst_desc(), eng, y)},
                                         {DNNL_ARG_SCRATCHPAD, dnnl_util::ThreadScratchpad(e.pd)}};
    if (!bias_.empty()) {
      args.emplace(DNNL_ARG_BIAS, memory(e.pd.bias_desc(), eng, const_cast<float*>(bias_.data())));
    }
    e.prim.execute(dnnl_util::ThreadStream(), args);
    dnnl_util::ThreadStream().wait();
  }

  const Entry& EntryFor(int64_t m, bool accumulate) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find({m, accumulate});
    if (it != entries_.end()) return it->second;
    auto& eng = dnnl_util::Engine();
    memory::desc src_md = dnnl_util::PlainDesc({m, k_}, dt::u8);
    memory::desc w_any({k_, n_}, dt::s8, memory::format_tag::any);
    memory::desc dst_md = dnnl_util::PlainDesc({m, n_}, dt::f32);
    dnnl::primitive_attr attr = dnnl_util::BaseAttr();
    attr.set_output_scales(/*mask=*/1 << 1, out_scales_);
    if (act_.zero_point != 0) attr.set_zero_points(DNNL_ARG_SRC, 0, {act_.zero_point});
    dnnl::post_ops ops;
    if (activation_ == Activation::kGelu)
      ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
    if (accumulate) ops.append_sum(1.0f);
    attr.set_post_ops(ops);
    dnnl::matmul::desc desc =
        bias_.empty()
            ? dnnl::matmul::desc(src_md, w_any, dst_md)
            : dnnl::matmul::desc(src_md, w_any, dnnl_util::PlainDesc({1, n_}, dt::f32), dst_md);
    dnnl::matmul::primitive_desc pd(desc, attr, eng);
    Entry entry{pd, dnnl::matmul(pd), WeightsIn(pd.weights_desc())};
    return entries_.emplace(std::make_pair(m, accumulate), std::move(entry)).first->second;
  }

  std::shared_ptr<memory> WeightsIn(const memory::desc& md) const {
    for (auto& [desc, mem] : weights_by_layout_) {
      if (desc == md) return mem;
    }
    auto& eng = dnnl_util::Engine();
    memory plain(memory::desc({k_, n_}, dt::s8, memory::format_tag::ba), eng,
                 const_cast<int8_t*>(weights_s8_.data()));
    auto reordered = std::make_shared<memory>(md, eng);
    dnnl::reorder(plain, *reordered).execute(dnnl_util::ThreadStream(), plain, *reordered);
    dnnl_util::ThreadStream().wait();
    weights_by_layout_.emplace_back(md, reordered);
    return reordered;
  }

  const int64_t n_, k_;
  const ActQuant act_;
  const Activation activation_;
  std::vector<int8_t> weights_s8_;  // (N, K)
  std::vector<float> out_scales_;   // s_x·s_w[n]
  std::vector<float> bias_;         // b[n] / out_scales_[n]
  mutable std::mutex mu_;
  mutable std::map<std::pair<int64_t, bool>, Entry> entries_;                                // mu_
  mutable std::vector<std::pair<memory::desc, std::shared_ptr<memory>>> weights_by_layout_;  // mu_
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
