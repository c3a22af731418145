// Building blocks shared by DeiT and Swin: LayerNorm, patch embedding, MLP.
// Each is built from a WeightStore by its canonical (timm) name prefix.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "backends/attention.h"
#include "backends/linear.h"
#include "backends/ops.h"
#include "backends/quant_spec.h"
#include "backends/tensor.h"
#include "backends/weight_store.h"

namespace vitq {

class LayerNorm {
 public:
  static absl::StatusOr<LayerNorm> Create(WeightStore& store, const std::string& prefix,
                                          int64_t dim, float eps);
  // x, y: (rows, dim); y may alias x. With a gather, output row r normalises x's row
  // gather->SourceRow(r) (a zero row for padding) and y must not alias x.
  void Forward(const float* x, float* y, int64_t rows, const RowGather* gather = nullptr) const;
  // Forward's output quantized onto `grid`, without writing the floats: codes (rows, dim).
  void ForwardToCodes(const float* x, int64_t rows, const ActQuant& grid, uint8_t* codes,
                      const RowGather* gather = nullptr) const;
  int64_t dim() const { return gamma_.numel(); }

 private:
  Tensor gamma_, beta_;
  float eps_ = 1e-6f;
};

// Conv2d(in_chans → dim, kernel = stride = patch) as im2col + Linear.
class PatchEmbed {
 public:
  static absl::StatusOr<PatchEmbed> Create(WeightStore& store, const std::string& prefix,
                                           int64_t in_chans, int64_t patch, int64_t dim,
                                           const PrecisionPlan& plan);
  // images: (B, C, H, W) → (B, H/p · W/p, dim), tokens in row-major patch order.
  Tensor Forward(const Tensor& images) const;
  const Linear& proj() const { return proj_; }

 private:
  int64_t in_chans_ = 0, patch_ = 0;
  Linear proj_;
};

// fc1 → GELU (fused) → fc2, with the residual added in fc2's epilogue.
class Mlp {
 public:
  static absl::StatusOr<Mlp> Create(WeightStore& store, const std::string& prefix, int64_t dim,
                                    int64_t hidden, const PrecisionPlan& plan);
  // x: (rows, dim) normalised input; residual: (rows, dim), residual += fc2(gelu(fc1(x))).
  void ForwardAdd(const float* x, int64_t rows, float* residual) const;
  // x += mlp(norm(x)), x: (rows, dim). An integer fc1 gets norm's output as codes.
  void ForwardAddNormed(const LayerNorm& norm, int64_t rows, float* x) const;
  const Linear& fc1() const { return fc1_; }
  const Linear& fc2() const { return fc2_; }

 private:
  // residual += fc2(gelu(fc1(input))), the input as floats (x) or as codes on fc1's input grid.
  void Run(const float* x, const uint8_t* x_codes, int64_t rows, float* residual) const;

  Linear fc1_, fc2_;
};

// y = linear(norm(x)), x: (rows, norm.dim()), y: (rows, linear.out_features()). An integer
// Linear gets norm's output as codes (one pass over x instead of a float write, read and
// quantization). With a gather, norm reads x's rows in its order (LayerNorm::Forward), e.g.
// Swin's window partition.
void NormThenLinear(const LayerNorm& norm, const Linear& linear, const float* x, int64_t rows,
                    float* y, const RowGather* gather = nullptr);

// out = attn(qkv(norm(x))), qkv's rows = groups·tokens (gathered as in NormThenLinear), out:
// (groups·tokens, C). Where qkv and attn are integer, q, k, v pass between them as codes written in
// qkv's epilogue (AttentionCore::TakesCodes); otherwise as floats.
void NormQkvAttention(const LayerNorm& norm, const Linear& qkv, const AttentionCore& attn,
                      const float* x, const RowGather* gather, int64_t groups, int64_t tokens,
                      const float* bias, int64_t bias_groups, float* out);

// Loads `prefix.weight` (out, in) and `prefix.bias` (out) (bias optional when !has_bias).
absl::StatusOr<Linear> LoadLinear(WeightStore& store, const std::string& prefix, int64_t in,
                                  int64_t out, bool has_bias, const PrecisionPlan& plan,
                                  Activation activation = Activation::kNone);

}  // namespace vitq
