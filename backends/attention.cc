#include "backends/attention.h"

#include <cmath>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "backends/bf16.h"
#include "backends/dnnl_util.h"
#include "backends/ops.h"
#include "backends/tensor.h"

namespace vitq {
namespace {

using dnnl::memory;
using dt = dnnl::memory::data_type;

// Batched matmul C[b] = A[b]·B[b] with A: (batch, m, k), C: (batch, m, n) f32 and
// B either (batch, k, n) or, when `b_transposed`, stored as (batch, n, k).
// Primitives are shared by all layers of all models with the same shape.
struct BatchedMatmul {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;

  void Run(const void* a, const void* b, float* c) const {
    auto& eng = dnnl_util::Engine();
    memory a_m(pd.src_desc(), eng, const_cast<void*>(a));
    memory b_m(pd.weights_desc(), eng, const_cast<void*>(b));
    memory c_m(pd.dst_desc(), eng, c);
    prim.execute(dnnl_util::ThreadStream(),
                 {{DNNL_ARG_SRC, a_m},
                  {DNNL_ARG_WEIGHTS, b_m},
                  {DNNL_ARG_DST, c_m},
                  {DNNL_ARG_SCRATCHPAD, dnnl_util::ThreadScratchpad(pd)}});
    dnnl_util::ThreadStream().wait();
  }
};

const BatchedMatmul& GetBatchedMatmul(int64_t batch, int64_t m, int64_t k, int64_t n,
                                      bool b_transposed, dt data_type) {
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, bool, dt>;
  static std::mutex mu;
  static std::map<Key, BatchedMatmul> cache;  // guarded by mu; entries never move (node map)
  std::lock_guard<std::mutex> lock(mu);
  Key key{batch, m, k, n, b_transposed, data_type};
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  memory::desc a_md = dnnl_util::PlainDesc({batch, m, k}, data_type);
  memory::desc b_md = b_transposed ? memory::desc({batch, k, n}, data_type, {n * k, 1, k})
                                   : dnnl_util::PlainDesc({batch, k, n}, data_type);
  memory::desc c_md = dnnl_util::PlainDesc({batch, m, n}, dt::f32);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), dnnl_util::BaseAttr(),
                                  dnnl_util::Engine());
  return cache.emplace(key, BatchedMatmul{pd, dnnl::matmul(pd)}).first->second;
}

// Per-thread scratch buffers, grown on demand (one engine call per thread at a time).
template <typename T>
T* Scratch(std::vector<T>& buffer, int64_t count) {
  if (buffer.size() < static_cast<size_t>(count)) buffer.resize(static_cast<size_t>(count));
  return buffer.data();
}

// Splits (G, N, 3, H, d) into q, k, v as (G·H, N, d); q pre-scaled by 1/√d as timm and
// torchvision do. T is float or uint16_t (bf16).
template <typename T>
void SplitHeads(const float* qkv, int64_t groups, int64_t tokens, int64_t heads, int64_t d,
                float scale, T* q, T* k, T* v) {
  const int64_t c = heads * d;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t n = 0; n < tokens; ++n) {
      const float* row = qkv + (g * tokens + n) * 3 * c;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t dst = ((g * heads + h) * tokens + n) * d;
        for (int64_t j = 0; j < d; ++j) {
          if constexpr (std::is_same_v<T, float>) {
            q[dst + j] = row[h * d + j] * scale;
            k[dst + j] = row[c + h * d + j];
            v[dst + j] = row[2 * c + h * d + j];
          } else {
            q[dst + j] = FloatToBf16(row[h * d + j] * scale);
            k[dst + j] = FloatToBf16(row[c + h * d + j]);
            v[dst + j] = FloatToBf16(row[2 * c + h * d + j]);
          }
        }
      }
    }
  }
}

// (G·H, N, d) → (G, N, H·d).
void MergeHeads(const float* heads_out, int64_t groups, int64_t tokens, int64_t heads, int64_t d,
                float* out) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t n = 0; n < tokens; ++n) {
      float* dst = out + (g * tokens + n) * heads * d;
      for (int64_t h = 0; h < heads; ++h) {
        const float* src = heads_out + ((g * heads + h) * tokens + n) * d;
        for (int64_t j = 0; j < d; ++j) dst[h * d + j] = src[j];
      }
    }
  }
}

}  // namespace

void AttentionCore::Forward(const float* qkv, int64_t groups, int64_t tokens, const float* bias,
                            int64_t bias_groups, float* out) const {
  thread_local std::vector<float> scores_buf, heads_buf;
  const int64_t gh = groups * num_heads_;
  const int64_t qkv_count = gh * tokens * head_dim_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim_));
  float* scores = Scratch(scores_buf, gh * tokens * tokens);  // (G·H, N, N)
  float* heads_out = Scratch(heads_buf, qkv_count);           // (G·H, N, d)
  const int64_t bias_rows = bias ? bias_groups * num_heads_ * tokens : 0;

  if (spec_.precision == Precision::kBf16) {
    thread_local std::vector<uint16_t> qkv16_buf, probs16_buf;
    uint16_t* q = Scratch(qkv16_buf, 3 * qkv_count);
    SplitHeads(qkv, groups, tokens, num_heads_, head_dim_, scale, q, q + qkv_count,
               q + 2 * qkv_count);
    GetBatchedMatmul(gh, tokens, head_dim_, tokens, true, dt::bf16).Run(q, q + qkv_count, scores);
    uint16_t* probs = Scratch(probs16_buf, gh * tokens * tokens);
    SoftmaxRowsToBf16(scores, probs, gh * tokens, tokens, bias, bias_rows);
    GetBatchedMatmul(gh, tokens, tokens, head_dim_, false, dt::bf16)
        .Run(probs, q + 2 * qkv_count, heads_out);
  } else {
    thread_local std::vector<float> qkv32_buf;
    float* q = Scratch(qkv32_buf, 3 * qkv_count);
    SplitHeads(qkv, groups, tokens, num_heads_, head_dim_, scale, q, q + qkv_count,
               q + 2 * qkv_count);
    GetBatchedMatmul(gh, tokens, head_dim_, tokens, true, dt::f32).Run(q, q + qkv_count, scores);
    SoftmaxRows(scores, gh * tokens, tokens, bias, bias_rows);
    GetBatchedMatmul(gh, tokens, tokens, head_dim_, false, dt::f32)
        .Run(scores, q + 2 * qkv_count, heads_out);
  }
  MergeHeads(heads_out, groups, tokens, num_heads_, head_dim_, out);
}

std::string AttentionCore::Describe(int64_t groups, int64_t tokens) const {
  const dt t = spec_.precision == Precision::kBf16 ? dt::bf16 : dt::f32;
  const int64_t gh = groups * num_heads_;
  return dnnl_util::ImplName(GetBatchedMatmul(gh, tokens, head_dim_, tokens, true, t).pd) + " | " +
         dnnl_util::ImplName(GetBatchedMatmul(gh, tokens, tokens, head_dim_, false, t).pd);
}

}  // namespace vitq
