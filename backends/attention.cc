#include "backends/attention.h"

#include <cmath>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backends/bf16.h"
#include "backends/dnnl_util.h"
#include "backends/ops.h"
#include "backends/quantize.h"
#include "backends/status_macros.h"
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

// Operand types and the static output scale (integer matmuls) select the primitive.
struct MatmulKey {
  int64_t batch, m, k, n;
  bool b_transposed;
  dt a_type, b_type;
  float out_scale;
  auto Tie() const { return std::tie(batch, m, k, n, b_transposed, a_type, b_type, out_scale); }
  bool operator<(const MatmulKey& o) const { return Tie() < o.Tie(); }
};

const BatchedMatmul& GetBatchedMatmul(const MatmulKey& key) {
  static std::mutex mu;
  static std::map<MatmulKey, BatchedMatmul> cache;  // guarded by mu; entries never move (node map)
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const auto [batch, m, k, n, b_transposed, a_type, b_type, out_scale] = key;
  memory::desc a_md = dnnl_util::PlainDesc({batch, m, k}, a_type);
  memory::desc b_md = b_transposed ? memory::desc({batch, k, n}, b_type, {n * k, 1, k})
                                   : dnnl_util::PlainDesc({batch, k, n}, b_type);
  memory::desc c_md = dnnl_util::PlainDesc({batch, m, n}, dt::f32);
  dnnl::primitive_attr attr = dnnl_util::BaseAttr();
  if (out_scale != 1.0f) attr.set_output_scales(0, {out_scale});  // static: keeps the brgemm path
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, dnnl_util::Engine());
  return cache.emplace(key, BatchedMatmul{pd, dnnl::matmul(pd)}).first->second;
}

const BatchedMatmul& GetBatchedMatmul(int64_t batch, int64_t m, int64_t k, int64_t n,
                                      bool b_transposed, dt data_type) {
  return GetBatchedMatmul(MatmulKey{batch, m, k, n, b_transposed, data_type, data_type, 1.0f});
}

// Per-thread scratch buffers, grown on demand (one engine call per thread at a time).
template <typename T>
T* Scratch(std::vector<T>& buffer, int64_t count) {
  if (buffer.size() < static_cast<size_t>(count)) buffer.resize(static_cast<size_t>(count));
  return buffer.data();
}

// Splits (G, N, 3, H, d) into q, k, v as (G·H, N, d). From floats, q is pre-scaled by 1/√d as
// timm and torchvision do, into T = float or uint16_t (bf16); int8 codes (q already scaled in the
// qkv GEMM's epilogue) are copied.
template <typename S, typename T>
void SplitHeads(const S* qkv, int64_t groups, int64_t tokens, int64_t heads, int64_t d, float scale,
                T* q, T* k, T* v) {
  const int64_t c = heads * d;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t n = 0; n < tokens; ++n) {
      const S* row = qkv + (g * tokens + n) * 3 * c;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t dst = ((g * heads + h) * tokens + n) * d;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) {
          if constexpr (std::is_same_v<S, int8_t>) {
            q[dst + j] = row[h * d + j];
            k[dst + j] = row[c + h * d + j];
            v[dst + j] = row[2 * c + h * d + j];
          } else if constexpr (std::is_same_v<T, float>) {
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

// SplitHeads straight into symmetric int8 codes: the codes QuantizeSymmetric gives for the fp32 q,
// k, v (same float operations in the same order), without writing the fp32 copy in between.
__attribute__((target_clones("avx512f", "avx2", "default"))) void SplitHeadsToInt8(
    const float* qkv, int64_t groups, int64_t tokens, int64_t heads, int64_t d, float q_prescale,
    const QuantSpec::Attention& a, int8_t* q, int8_t* k, int8_t* v) {
  const int64_t c = heads * d;
  const float inv_q = 1.0f / a.q_scale, inv_k = 1.0f / a.k_scale, inv_v = 1.0f / a.v_scale;
  const float qmax = static_cast<float>((1 << (a.qkv_bits - 1)) - 1);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t n = 0; n < tokens; ++n) {
      const float* row = qkv + (g * tokens + n) * 3 * c;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t dst = ((g * heads + h) * tokens + n) * d;
#pragma omp simd  // GCC cannot rule out that q, k, v alias qkv and leaves the loop scalar
        for (int64_t j = 0; j < d; ++j) {
          q[dst + j] = SymmetricCode(row[h * d + j] * q_prescale, inv_q, qmax);
          k[dst + j] = SymmetricCode(row[c + h * d + j], inv_k, qmax);
          v[dst + j] = SymmetricCode(row[2 * c + h * d + j], inv_v, qmax);
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
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) dst[h * d + j] = src[j];
      }
    }
  }
}

// Softmax outputs lie in [0, 1]: unsigned codes, zero point 0, scale 1/(2^bits − 1) unless a
// (learned) smaller scale clips the rare large probabilities for finer small ones.
ActQuant ProbsQuant(const QuantSpec::Attention& a) {
  ActQuant p;
  p.bits = a.probs_bits;
  p.scale = a.ProbsScale();
  p.zero_point = 0;
  return p;
}

// One head's channels x[0..d) → (x − mean) / sqrt(var + eps) · weight + bias (biased variance,
// as LayerNorm computes it).
void RectifyHead(const float* x, int64_t d, float eps, const float* weight, const float* bias,
                 float* out) {
  float mean = 0;
  for (int64_t j = 0; j < d; ++j) mean += x[j];
  mean /= static_cast<float>(d);
  float var = 0;
  for (int64_t j = 0; j < d; ++j) var += (x[j] - mean) * (x[j] - mean);
  const float inv = 1.0f / std::sqrt(var / static_cast<float>(d) + eps);
  for (int64_t j = 0; j < d; ++j) out[j] = (x[j] - mean) * inv * weight[j] + bias[j];
}

// Copies qkv (rows, 3·C) with the q and k parts rectified per head (Q-ViT's IRM); v unchanged.
void RectifyQk(const float* qkv, int64_t rows, int64_t heads, int64_t d,
               const QuantSpec::Attention& a, float* out) {
  const int64_t c = heads * d;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = qkv + r * 3 * c;
    float* dst = out + r * 3 * c;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t o = h * d;
      RectifyHead(src + o, d, a.rectify_eps, &a.q_norm_weight[o], &a.q_norm_bias[o], dst + o);
      RectifyHead(src + c + o, d, a.rectify_eps, &a.k_norm_weight[o], &a.k_norm_bias[o],
                  dst + c + o);
    }
    std::copy(src + 2 * c, src + 3 * c, dst + 2 * c);
  }
}

// Per-thread buffers shared by the float and the codes entries (a thread runs one attention at a
// time): scores (G·H, N, N), the heads' outputs (G·H, N, d) and the split q, k, v codes.
struct AttentionScratch {
  std::vector<float> scores, heads;
  std::vector<int8_t> qkv_codes;
};
AttentionScratch& ThreadScratch() {
  thread_local AttentionScratch scratch;
  return scratch;
}

}  // namespace

void AttentionCore::Forward(const float* qkv, int64_t groups, int64_t tokens, const float* bias,
                            int64_t bias_groups, float* out) const {
  thread_local std::vector<float> rectified_buf;
  if (spec_.attn.rectify) {
    float* rectified = Scratch(rectified_buf, groups * tokens * 3 * num_heads_ * head_dim_);
    RectifyQk(qkv, groups * tokens, num_heads_, head_dim_, spec_.attn, rectified);
    qkv = rectified;
  }
  const int64_t gh = groups * num_heads_;
  const int64_t qkv_count = gh * tokens * head_dim_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim_));
  float* scores = Scratch(ThreadScratch().scores, gh * tokens * tokens);
  float* heads_out = Scratch(ThreadScratch().heads, qkv_count);
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
  } else if (spec_.precision == Precision::kInt8 && !spec_.fake_quant) {
    ForwardInteger(qkv, groups, tokens, bias, bias_rows, scores, heads_out);
  } else {
    thread_local std::vector<float> qkv32_buf;
    float* q = Scratch(qkv32_buf, 3 * qkv_count);
    SplitHeads(qkv, groups, tokens, num_heads_, head_dim_, scale, q, q + qkv_count,
               q + 2 * qkv_count);
    if (spec_.q_observer) {  // calibration
      spec_.q_observer->Observe(q, qkv_count);
      spec_.k_observer->Observe(q + qkv_count, qkv_count);
      spec_.v_observer->Observe(q + 2 * qkv_count, qkv_count);
    }
    if (spec_.attn_sample) {
      spec_.attn_sample->Record(q, q + qkv_count, q + 2 * qkv_count, gh, tokens, head_dim_, bias,
                                bias ? bias_groups * num_heads_ : 1);
    }
    const bool fake =
        spec_.precision == Precision::kInt8;  // the fp32 simulation of the integer path
    if (fake) {
      FakeQuantSymmetric(q, qkv_count, spec_.attn.q_scale, spec_.attn.qkv_bits);
      FakeQuantSymmetric(q + qkv_count, qkv_count, spec_.attn.k_scale, spec_.attn.qkv_bits);
      FakeQuantSymmetric(q + 2 * qkv_count, qkv_count, spec_.attn.v_scale, spec_.attn.qkv_bits);
    }
    GetBatchedMatmul(gh, tokens, head_dim_, tokens, true, dt::f32).Run(q, q + qkv_count, scores);
    SoftmaxRows(scores, gh * tokens, tokens, bias, bias_rows);
    if (fake) {
      const ActQuant p = ProbsQuant(spec_.attn);
      FakeQuantActivations(scores, gh * tokens * tokens, p, scores);
    }
    GetBatchedMatmul(gh, tokens, tokens, head_dim_, false, dt::f32)
        .Run(scores, q + 2 * qkv_count, heads_out);
  }
  MergeHeads(heads_out, groups, tokens, num_heads_, head_dim_, out);
}

absl::StatusOr<AttentionCore> AttentionCore::Create(const std::string& name, int64_t num_heads,
                                                    int64_t head_dim, QuantSpec spec) {
  if (spec.precision == Precision::kInt8 && !spec.is_attention) {
    return absl::InvalidArgumentError(
        name + ": an integer attention needs q/k/v quantizers (an attention spec)");
  }
  if (absl::Status s = ValidateSpec(spec); !s.ok()) {
    return absl::InvalidArgumentError(name + ": " + std::string(s.message()));
  }
  const size_t per_head = static_cast<size_t>(num_heads * head_dim);
  const QuantSpec::Attention& a = spec.attn;
  if (a.rectify && (a.q_norm_weight.size() != per_head || a.q_norm_bias.size() != per_head ||
                    a.k_norm_weight.size() != per_head || a.k_norm_bias.size() != per_head)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": rectification needs q/k norm weight and bias of ", num_heads, "×",
                     head_dim, " values"));
  }
  return AttentionCore(num_heads, head_dim, std::move(spec));
}

absl::StatusOr<AttentionCore> AttentionCore::Load(WeightStore& store, const std::string& prefix,
                                                  int64_t num_heads, int64_t head_dim,
                                                  QuantSpec spec) {
  if (spec.is_attention && spec.attn.rectify) {
    const Shape shape = {num_heads, head_dim};
    auto take = [&](const char* name, std::vector<float>& into) -> absl::Status {
      VITQ_ASSIGN_OR_RETURN(Tensor t, store.Take(prefix + name, shape));
      into.assign(t.data(), t.data() + t.numel());
      return absl::OkStatus();
    };
    VITQ_RETURN_IF_ERROR(take("q_norm.weight", spec.attn.q_norm_weight));
    VITQ_RETURN_IF_ERROR(take("q_norm.bias", spec.attn.q_norm_bias));
    VITQ_RETURN_IF_ERROR(take("k_norm.weight", spec.attn.k_norm_weight));
    VITQ_RETURN_IF_ERROR(take("k_norm.bias", spec.attn.k_norm_bias));
  }
  return Create(prefix + "matmul", num_heads, head_dim, std::move(spec));
}

// Quantizes the fp32 qkv into per-head q, k, v codes in one pass, then attends.
void AttentionCore::ForwardInteger(const float* qkv, int64_t groups, int64_t tokens,
                                   const float* bias, int64_t bias_rows, float* scores,
                                   float* heads_out) const {
  const int64_t count = groups * num_heads_ * tokens * head_dim_;
  int8_t* q8 = Scratch(ThreadScratch().qkv_codes, 3 * count);
  SplitHeadsToInt8(qkv, groups, tokens, num_heads_, head_dim_,
                   1.0f / std::sqrt(static_cast<float>(head_dim_)), spec_.attn, q8, q8 + count,
                   q8 + 2 * count);
  AttendInteger(q8, groups, tokens, bias, bias_rows, scores, heads_out);
}

// q·kᵀ on s8×s8 and softmax·v on u8×s8, the dequantization scales fixed in each primitive.
void AttentionCore::AttendInteger(const int8_t* q8, int64_t groups, int64_t tokens,
                                  const float* bias, int64_t bias_rows, float* scores,
                                  float* heads_out) const {
  const int64_t gh = groups * num_heads_, count = gh * tokens * head_dim_;
  const QuantSpec::Attention& a = spec_.attn;
  thread_local std::vector<uint8_t> probs8_buf;
  GetBatchedMatmul(
      MatmulKey{gh, tokens, head_dim_, tokens, true, dt::s8, dt::s8, a.q_scale * a.k_scale})
      .Run(q8, q8 + count, scores);
  const ActQuant p = ProbsQuant(a);
  uint8_t* probs = Scratch(probs8_buf, gh * tokens * tokens);
  SoftmaxRowsToCodes(scores, probs, gh * tokens, tokens, 1.0f / p.scale,
                     static_cast<float>(p.qmax()), bias, bias_rows);
  GetBatchedMatmul(
      MatmulKey{gh, tokens, tokens, head_dim_, false, dt::u8, dt::s8, p.scale * a.v_scale})
      .Run(probs, q8 + 2 * count, heads_out);
}

bool AttentionCore::TakesCodes() const {
  return spec_.precision == Precision::kInt8 && !spec_.fake_quant && !spec_.attn.rectify;
}

AttentionCore::AttentionCore(int64_t num_heads, int64_t head_dim, QuantSpec spec)
    : num_heads_(num_heads), head_dim_(head_dim), spec_(std::move(spec)) {
  if (!TakesCodes()) return;
  const int64_t c = num_heads_ * head_dim_;
  const QuantSpec::Attention& a = spec_.attn;
  const float q_prescale = 1.0f / std::sqrt(static_cast<float>(head_dim_));
  qkv_code_scales_.resize(3 * c);
  std::fill(qkv_code_scales_.begin(), qkv_code_scales_.begin() + c, q_prescale / a.q_scale);
  std::fill(qkv_code_scales_.begin() + c, qkv_code_scales_.begin() + 2 * c, 1.0f / a.k_scale);
  std::fill(qkv_code_scales_.begin() + 2 * c, qkv_code_scales_.end(), 1.0f / a.v_scale);
}

void AttentionCore::ForwardCodes(const int8_t* qkv_codes, int64_t groups, int64_t tokens,
                                 const float* bias, int64_t bias_groups, float* out) const {
  const int64_t gh = groups * num_heads_, count = gh * tokens * head_dim_;
  AttentionScratch& scratch = ThreadScratch();
  float* scores = Scratch(scratch.scores, gh * tokens * tokens);
  float* heads_out = Scratch(scratch.heads, count);
  int8_t* q8 = Scratch(scratch.qkv_codes, 3 * count);
  SplitHeads(qkv_codes, groups, tokens, num_heads_, head_dim_, 1.0f, q8, q8 + count,
             q8 + 2 * count);
  AttendInteger(q8, groups, tokens, bias, bias ? bias_groups * num_heads_ * tokens : 0, scores,
                heads_out);
  MergeHeads(heads_out, groups, tokens, num_heads_, head_dim_, out);
}

std::string AttentionCore::Describe(int64_t groups, int64_t tokens) const {
  const int64_t gh = groups * num_heads_;
  if (spec_.precision == Precision::kInt8 && !spec_.fake_quant) {
    const QuantSpec::Attention& a = spec_.attn;
    const float probs_scale = a.ProbsScale();
    MatmulKey qk{gh, tokens, head_dim_, tokens, true, dt::s8, dt::s8, a.q_scale * a.k_scale};
    MatmulKey pv{gh, tokens, tokens, head_dim_, false, dt::u8, dt::s8, probs_scale * a.v_scale};
    return dnnl_util::ImplName(GetBatchedMatmul(qk).pd) + " | " +
           dnnl_util::ImplName(GetBatchedMatmul(pv).pd);
  }
  const dt t = spec_.precision == Precision::kBf16 ? dt::bf16 : dt::f32;
  return dnnl_util::ImplName(GetBatchedMatmul(gh, tokens, head_dim_, tokens, true, t).pd) + " | " +
         dnnl_util::ImplName(GetBatchedMatmul(gh, tokens, tokens, head_dim_, false, t).pd);
}

}  // namespace vitq
