#include "backends/matmul_cache.h"

#include <cstring>

#include "backends/dnnl_util.h"

namespace vitq {

using dnnl::memory;
using dt = dnnl::memory::data_type;

LinearMatmul::LinearMatmul(Options options, const void* weights, std::vector<float> bias)
    : options_(std::move(options)), bias_(std::move(bias)) {
  const size_t bytes = options_.n * options_.k * memory::data_type_size(options_.weight_type);
  plain_weights_.resize(bytes);
  std::memcpy(plain_weights_.data(), weights, bytes);
}

void LinearMatmul::Run(const void* src, int64_t m, float* y, bool accumulate) const {
  const Entry& e = EntryFor(m, accumulate);
  auto& eng = dnnl_util::Engine();
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(e.pd.src_desc(), eng, const_cast<void*>(src))},
      {DNNL_ARG_WEIGHTS, *e.weights},
      {DNNL_ARG_DST, memory(e.pd.dst_desc(), eng, y)},
      {DNNL_ARG_SCRATCHPAD, dnnl_util::ThreadScratchpad(e.pd)}};
  if (!bias_.empty())
    args.emplace(DNNL_ARG_BIAS, memory(e.pd.bias_desc(), eng, const_cast<float*>(bias_.data())));
  e.prim.execute(dnnl_util::ThreadStream(), args);
  dnnl_util::ThreadStream().wait();
}

std::string LinearMatmul::Describe(int64_t m) const {
  return dnnl_util::ImplName(EntryFor(m, false).pd);
}

const LinearMatmul::Entry& LinearMatmul::EntryFor(int64_t m, bool accumulate) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find({m, accumulate});
  if (it != entries_.end()) return it->second;
  const int64_t n = options_.n, k = options_.k;
  memory::desc src_md = dnnl_util::PlainDesc({m, k}, options_.src_type);
  memory::desc w_any({k, n}, options_.weight_type, memory::format_tag::any);
  memory::desc dst_md = dnnl_util::PlainDesc({m, n}, dt::f32);
  dnnl::primitive_attr attr = dnnl_util::BaseAttr();
  if (options_.add_attributes) options_.add_attributes(attr);
  dnnl::post_ops ops;
  if (options_.activation == Activation::kGelu)
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
  if (accumulate) ops.append_sum(1.0f);  // y += ...: the residual add
  attr.set_post_ops(ops);
  dnnl::matmul::desc desc =
      bias_.empty()
          ? dnnl::matmul::desc(src_md, w_any, dst_md)
          : dnnl::matmul::desc(src_md, w_any, dnnl_util::PlainDesc({1, n}, dt::f32), dst_md);
  dnnl::matmul::primitive_desc pd(desc, attr, dnnl_util::Engine());
  Entry entry{pd, dnnl::matmul(pd), WeightsIn(pd.weights_desc())};
  return entries_.emplace(std::make_pair(m, accumulate), std::move(entry)).first->second;
}

std::shared_ptr<memory> LinearMatmul::WeightsIn(const memory::desc& md) const {
  for (auto& [desc, mem] : weights_by_layout_) {
    if (desc == md) return mem;
  }
  auto& eng = dnnl_util::Engine();
  // Our weight is (N, K) row-major: the (K, N) matrix oneDNN wants, in "ba" order.
  memory plain(memory::desc({options_.k, options_.n}, options_.weight_type, memory::format_tag::ba),
               eng, const_cast<uint8_t*>(plain_weights_.data()));
  auto reordered = std::make_shared<memory>(md, eng);
  dnnl::reorder(plain, *reordered).execute(dnnl_util::ThreadStream(), plain, *reordered);
  dnnl_util::ThreadStream().wait();
  weights_by_layout_.emplace_back(md, reordered);
  return reordered;
}

}  // namespace vitq
