// Element-wise and row-wise kernels of the transformer that are not GEMMs:
// LayerNorm, softmax (with an additive bias, for Swin's relative position bias and
// shift mask), exact-erf GELU, residual add. Each is vectorised (AVX-512 / AVX2 clones
// chosen at run time) and parallel over rows with OpenMP.
//
// Shape comments: rows × cols, row-major.
#pragma once

#include <cstdint>

namespace vitq {

struct ActQuant;

// y = (x - mean) / sqrt(var + eps) * gamma + beta, per row.   x, y: (rows, cols)
// y may alias x.
void LayerNormRows(const float* x, float* y, int64_t rows, int64_t cols, const float* gamma,
                   const float* beta, float eps);
// LayerNormRows quantized onto `grid` without writing the floats: codes (rows, cols) u8, equal to
// QuantizeActivations of LayerNormRows' output (for an integer Linear that reads codes).
void LayerNormRowsToCodes(const float* x, uint8_t* codes, int64_t rows, int64_t cols,
                          const float* gamma, const float* beta, float eps, const ActQuant& grid);

// A row gather repeated every `period` output rows: output row r reads input row
// source[r % period] + (r / period) · stride, or is a zero row where that source is negative
// (padding). Swin's window partition of a batch: one period per image.
struct RowGather {
  const int64_t* source;
  int64_t period, stride;
  int64_t SourceRow(int64_t r) const {
    const int64_t s = source[r % period];
    return s < 0 ? -1 : s + (r / period) * stride;
  }
};

// LayerNormRows / LayerNormRowsToCodes of the gathered rows, without writing the gather first:
// y or codes (rows, cols); a padding row is zeros, as codes the grid's code for 0.
void LayerNormGatherRows(const float* x, const RowGather& gather, float* y, int64_t rows,
                         int64_t cols, const float* gamma, const float* beta, float eps);
void LayerNormGatherRowsToCodes(const float* x, const RowGather& gather, uint8_t* codes,
                                int64_t rows, int64_t cols, const float* gamma, const float* beta,
                                float eps, const ActQuant& grid);

// In place: x = softmax(x + bias) per row.   x: (rows, cols); bias: (bias_rows, cols) or null,
// periodic: row r adds bias row r % bias_rows (one bias block shared by many groups).
void SoftmaxRows(float* x, int64_t rows, int64_t cols, const float* bias = nullptr,
                 int64_t bias_rows = 0);

// softmax(x + bias) written as bf16 (for a bf16 attention matmul).  x is left unchanged.
void SoftmaxRowsToBf16(const float* x, uint16_t* y, int64_t rows, int64_t cols,
                       const float* bias = nullptr, int64_t bias_rows = 0);

// softmax(x + bias) written as unsigned 8-bit codes of zero point 0 (probabilities are >= 0):
// clamp(round(p · inv_scale), 0, qmax), the codes QuantizeActivations gives for the fp32
// softmax, without writing it first. x is left unchanged.
void SoftmaxRowsToCodes(const float* x, uint8_t* y, int64_t rows, int64_t cols, float inv_scale,
                        float qmax, const float* bias = nullptr, int64_t bias_rows = 0);

// In place GELU with the exact erf formulation 0.5·x·(1 + erf(x/√2)).
void GeluErf(float* x, int64_t n);
// The same on the calling thread only, for kernel epilogues already inside a parallel region
// (a short row segment is not worth a nested OpenMP team). Bit-identical to GeluErf.
void GeluErfSerial(float* x, int64_t n);

// y += x.
void AddInPlace(float* y, const float* x, int64_t n);

// Scalar references, for tests and as the oracle of the vectorised kernels.
float ErfApprox(float x);  // |error| < 2e-7 (Abramowitz & Stegun 7.1.26)
float ExpApprox(float x);  // relative error < 2e-7 on [-87, 88]

}  // namespace vitq
