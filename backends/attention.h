// Multi-head self-attention on packed q|k|v, shared by ViT (global attention) and
// Swin (window attention): softmax(q·kᵀ/√d + bias)·v per head.
//
// The two attention matmuls run on oneDNN at the precision of the layer's QuantSpec
// (fp32, or bf16 operands with fp32 accumulation). The optional additive bias holds
// Swin's relative position bias plus shift mask, periodic over groups.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/quant_spec.h"
#include "backends/weight_store.h"

namespace vitq {

class AttentionCore {
 public:
  AttentionCore() = default;
  AttentionCore(int64_t num_heads, int64_t head_dim, QuantSpec spec);
  // Validates `spec` (an integer attention needs its q/k/v quantizers); errors start with `name`.
  static absl::StatusOr<AttentionCore> Create(const std::string& name, int64_t num_heads,
                                              int64_t head_dim, QuantSpec spec);

  // qkv:  (groups, tokens, 3·C) as the qkv Linear writes it, C = heads·head_dim,
  //       channel order [q | k | v], each [head][head_dim].
  // bias: (bias_groups, heads, tokens, tokens) or null; group g adds bias[g % bias_groups].
  // out:  (groups, tokens, C), heads concatenated.
  // Create() after taking the Q-ViT rectification tensors `<prefix>q_norm.weight` ... from
  // `store` when the spec asks for them; `prefix` is "<block>.attn.".
  static absl::StatusOr<AttentionCore> Load(WeightStore& store, const std::string& prefix,
                                            int64_t num_heads, int64_t head_dim, QuantSpec spec);

  void Forward(const float* qkv, int64_t groups, int64_t tokens, const float* bias,
               int64_t bias_groups, float* out) const;

  // Integer attention without rectification takes q, k, v as codes, which the qkv Linear can
  // write in its epilogue: qkv_codes[.., c] = SymmetricCode(qkv[.., c] · QkvCodeScales()[c]) on
  // qkv_bits (q pre-scaled by 1/√d, as Forward does). ForwardCodes then gives what Forward gives
  // for the qkv those codes came from.
  bool TakesCodes() const;
  const std::vector<float>& QkvCodeScales() const { return qkv_code_scales_; }  // 3·C: q | k | v
  int qkv_bits() const { return spec_.attn.qkv_bits; }
  void ForwardCodes(const int8_t* qkv_codes, int64_t groups, int64_t tokens, const float* bias,
                    int64_t bias_groups, float* out) const;

  int64_t num_heads() const { return num_heads_; }
  int64_t head_dim() const { return head_dim_; }
  const QuantSpec& spec() const { return spec_; }
  // Implementations of the two matmuls for this shape, e.g. "brg:avx512_core | gemm:jit".
  std::string Describe(int64_t groups, int64_t tokens) const;

 private:
  void ForwardInteger(const float* qkv, int64_t groups, int64_t tokens, const float* bias,
                      int64_t bias_rows, float* scores, float* heads_out) const;
  // q·kᵀ, softmax and ·v on split codes q8, k8, v8: (G·H, N, d) each.
  void AttendInteger(const int8_t* q8, int64_t groups, int64_t tokens, const float* bias,
                     int64_t bias_rows, float* scores, float* heads_out) const;

  int64_t num_heads_ = 0;
  int64_t head_dim_ = 0;
  QuantSpec spec_;
  std::vector<float> qkv_code_scales_;  // when TakesCodes()
};

}  // namespace vitq
