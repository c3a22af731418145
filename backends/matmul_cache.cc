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
  Execute(EntryFor({m, accumulate, 0, 0.0f, 0}), src, y);
}

void LinearMatmul::RunToCodes(const void* src, int64_t m, const ActQuant& grid,
                              uint8_t* codes) const {
  Execute(EntryFor({m, false, grid.bits, grid.scale, grid.zero_point}), src, codes);
}

void LinearMatmul::RunToSymmetricCodes(const void* src, int64_t m, const float* column_scale,
                                       int bits, int8_t* codes) const {
  Execute(EntryFor({m, false, bits, 1.0f, 0, /*symmetric=*/true}), src, codes, column_scale);
}

void LinearMatmul::Execute(const Entry& e, const void* src, void* dst,
                           const float* column_scale) const {
  auto& eng = dnnl_util::Engine();
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(e.pd.src_desc(), eng, const_cast<void*>(src))},
      {DNNL_ARG_WEIGHTS, *e.weights},
      {DNNL_ARG_DST, memory(e.pd.dst_desc(), eng, dst)},
      {DNNL_ARG_SCRATCHPAD, dnnl_util::ThreadScratchpad(e.pd)}};
  if (!bias_.empty())
    args.emplace(DNNL_ARG_BIAS, memory(e.pd.bias_desc(), eng, const_cast<float*>(bias_.data())));
  if (e.column_scale_post_op >= 0) {
    args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(e.column_scale_post_op) | DNNL_ARG_SRC_1,
                 memory(dnnl_util::PlainDesc({1, options_.n}, dt::f32), eng,
                        const_cast<float*>(column_scale)));
  }
  e.prim.execute(dnnl_util::ThreadStream(), args);
  dnnl_util::ThreadStream().wait();
}

std::string LinearMatmul::Describe(int64_t m) const {
  return dnnl_util::ImplName(EntryFor({m, false, 0, 0.0f, 0}).pd);
}

const LinearMatmul::Entry& LinearMatmul::EntryFor(const Key& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it != entries_.end()) return it->second;
  const int64_t m = key.m, n = options_.n, k = options_.k;
  const bool to_symmetric = key.symmetric;
  const bool to_codes = key.grid_bits > 0 && !to_symmetric;
  memory::desc src_md = dnnl_util::PlainDesc({m, k}, options_.src_type);
  memory::desc w_any({k, n}, options_.weight_type, memory::format_tag::any);
  memory::desc dst_md =
      dnnl_util::PlainDesc({m, n}, to_symmetric ? dt::s8 : (to_codes ? dt::u8 : dt::f32));
  dnnl::primitive_attr attr = dnnl_util::BaseAttr();
  if (options_.add_attributes) options_.add_attributes(attr);
  dnnl::post_ops ops;
  if (options_.activation == Activation::kGelu)
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
  if (key.accumulate) ops.append_sum(1.0f);  // y += ...: the residual add
  if (to_codes) {
    // y / scale + zero point, clamped to the grid; the u8 store rounds half to even.
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_linear, 1.0f / key.grid_scale,
                       static_cast<float>(key.grid_zero_point));
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, 0.0f,
                       static_cast<float>((1 << key.grid_bits) - 1));
  }
  int column_scale_post_op = -1;
  if (to_symmetric) {
    // y · column_scale[n] (a per-column broadcast), clamped to ±qmax; the s8 store rounds half
    // to even.
    column_scale_post_op = ops.len();
    ops.append_binary(dnnl::algorithm::binary_mul, dnnl_util::PlainDesc({1, n}, dt::f32));
    const float qmax = static_cast<float>((1 << (key.grid_bits - 1)) - 1);
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, -qmax, qmax);
  }
  attr.set_post_ops(ops);
  dnnl::matmul::desc desc =
      bias_.empty()
          ? dnnl::matmul::desc(src_md, w_any, dst_md)
          : dnnl::matmul::desc(src_md, w_any, dnnl_util::PlainDesc({1, n}, dt::f32), dst_md);
  dnnl::matmul::primitive_desc pd(desc, attr, dnnl_util::Engine());
  Entry entry{pd, dnnl::matmul(pd), WeightsIn(pd.weights_desc()), column_scale_post_op};
  return entries_.emplace(key, std::move(entry)).first->second;
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
