#include "backends/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/bf16.h"
#include "backends/quantize.h"

// Hot loops are compiled for AVX-512, AVX2 and baseline x86-64; the loader picks
// the best one for the CPU (GCC function multiversioning).
#define VITQ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace vitq {
namespace {

// exp(x) by range reduction x = n·ln2 + r and a degree-6 polynomial on r (Cephes expf);
// written branch-free so that loops calling it vectorise.
inline float ExpPoly(float x_in) {
  const float x = std::min(std::max(x_in, -87.0f), 88.0f);
  float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return x_in < -87.0f ? 0.0f : p * scale;  // exp underflows to 0 as std::exp does
}

inline float ErfPoly(float x) {
  const float ax = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.3275911f * ax);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float y = 1.0f - p * t * ExpPoly(-ax * ax);
  return std::copysign(y, x);
}

VITQ_CLONES void LayerNormRow(const float* x, float* y, int64_t cols, const float* gamma,
                              const float* beta, float eps) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < cols; ++i) sum += x[i];
  const float mean = sum / static_cast<float>(cols);
  float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < cols; ++i) sq += (x[i] - mean) * (x[i] - mean);
  const float rstd = 1.0f / std::sqrt(sq / static_cast<float>(cols) + eps);
#pragma omp simd
  for (int64_t i = 0; i < cols; ++i) y[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
}

// Softmax rows are processed in blocks of kLanes values with per-lane running max and sum:
// GCC leaves a float `omp simd reduction(max)` scalar, and a row's tail (197 = 12·16 + 5) ran
// scalar exp. Padding the tail to a full block keeps every exp in vector code.
constexpr int64_t kLanes = 16;

template <bool kHasBias>
[[gnu::always_inline]] inline float RowMax(const float* x, const float* bias, int64_t cols) {
  float lanes[kLanes];
  for (float& m : lanes) m = -INFINITY;
  int64_t i = 0;
  for (; i + kLanes <= cols; i += kLanes) {
#pragma omp simd
    for (int64_t j = 0; j < kLanes; ++j) {
      const float v = kHasBias ? x[i + j] + bias[i + j] : x[i + j];
      lanes[j] = lanes[j] < v ? v : lanes[j];
    }
  }
  for (int64_t j = 0; i < cols; ++i, ++j) {
    const float v = kHasBias ? x[i] + bias[i] : x[i];
    lanes[j] = lanes[j] < v ? v : lanes[j];
  }
  float max_v = lanes[0];
  for (int64_t j = 1; j < kLanes; ++j) max_v = max_v < lanes[j] ? lanes[j] : max_v;
  return max_v;
}

// e[j] = exp(x[j] + bias[j] - shift) for one block, added to the lane sums.
template <bool kHasBias>
[[gnu::always_inline]] inline void ExpBlock(const float* x, const float* bias, float shift,
                                            float* e, float* sums) {
#pragma omp simd
  for (int64_t j = 0; j < kLanes; ++j) {
    const float v = kHasBias ? x[j] + bias[j] : x[j];
    e[j] = ExpPoly(v - shift);
    sums[j] += e[j];
  }
}

template <bool kHasBias>
[[gnu::always_inline]] inline float ExpShiftedRowImpl(const float* x, const float* bias, float* e,
                                                      int64_t cols) {
  const float max_v = RowMax<kHasBias>(x, bias, cols);
  float sums[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= cols; i += kLanes) {
    ExpBlock<kHasBias>(x + i, kHasBias ? bias + i : nullptr, max_v, e + i, sums);
  }
  if (i < cols) {  // padded with -inf, whose exp is 0
    float x_tail[kLanes], bias_tail[kLanes] = {}, e_tail[kLanes];
    for (int64_t j = 0; j < kLanes; ++j) {
      x_tail[j] = i + j < cols ? x[i + j] : -INFINITY;
      if (kHasBias && i + j < cols) bias_tail[j] = bias[i + j];
    }
    ExpBlock<kHasBias>(x_tail, bias_tail, max_v, e_tail, sums);
    std::copy(e_tail, e_tail + (cols - i), e + i);
  }
  float sum = 0.0f;
  for (float s : sums) sum += s;
  return sum;
}

// Writes exp(x + bias - max) to e (which may be x) and returns its sum.
VITQ_CLONES float ExpShiftedRow(const float* x, const float* bias, float* e, int64_t cols) {
  return bias ? ExpShiftedRowImpl<true>(x, bias, e, cols)
              : ExpShiftedRowImpl<false>(x, nullptr, e, cols);
}

VITQ_CLONES void ScaleRow(float* x, int64_t cols, float s) {
#pragma omp simd
  for (int64_t i = 0; i < cols; ++i) x[i] *= s;
}

// Probabilities times inv_scale are >= 0, so only the upper clamp can bind; above 2^22, where
// RoundHalfEven is inexact, that clamp gives qmax as ActivationCode's does.
VITQ_CLONES void ScaleRowToCodes(const float* x, uint8_t* y, int64_t cols, float s, float inv_scale,
                                 float qmax) {
#pragma omp simd
  for (int64_t i = 0; i < cols; ++i) {
    const float code = RoundHalfEven((x[i] * s) * inv_scale) + 0.0f;
    y[i] = static_cast<uint8_t>(code > qmax ? qmax : code);
  }
}

VITQ_CLONES void ScaleRowToBf16(const float* x, uint16_t* y, int64_t cols, float s) {
#pragma omp simd
  for (int64_t i = 0; i < cols; ++i) {
    float f = x[i] * s;
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    bits += 0x7fffu + ((bits >> 16) & 1u);  // finite inputs only: softmax outputs are in [0, 1]
    y[i] = static_cast<uint16_t>(bits >> 16);
  }
}

VITQ_CLONES void GeluChunk(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i)
    x[i] = 0.5f * x[i] * (1.0f + ErfPoly(x[i] * 0.70710678118654752f));
}

VITQ_CLONES void AddChunk(float* y, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

VITQ_CLONES void ToBf16Chunk(const float* src, uint16_t* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &src[i], 4);
    const bool is_nan = (bits & 0x7fffffffu) > 0x7f800000u;
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    dst[i] = static_cast<uint16_t>(is_nan ? ((bits >> 16) | 0x40u) : rounded);
  }
}

constexpr int64_t kChunk = 16384;  // elements per parallel work item of flat kernels

template <typename Fn>
void ParallelChunks(int64_t n, Fn fn) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk;
    fn(begin, std::min(kChunk, n - begin));
  }
}

}  // namespace

float ExpApprox(float x) { return ExpPoly(x); }
float ErfApprox(float x) { return ErfPoly(x); }

namespace {

// Output row r normalises input row source_row(r), or is zero where that is negative.
template <typename SourceRow>
void LayerNormRowsFrom(const float* x, SourceRow source_row, float* y, int64_t rows, int64_t cols,
                       const float* gamma, const float* beta, float eps) {
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t src = source_row(r);
    float* out = y + r * cols;
    if (src < 0) {
      std::fill(out, out + cols, 0.0f);
    } else {
      LayerNormRow(x + src * cols, out, cols, gamma, beta, eps);
    }
  }
}

template <typename SourceRow>
void LayerNormRowsToCodesFrom(const float* x, SourceRow source_row, uint8_t* codes, int64_t rows,
                              int64_t cols, const float* gamma, const float* beta, float eps,
                              const ActQuant& grid) {
  const uint8_t zero_code =
      ActivationCode(0.0f, 1.0f / grid.scale, static_cast<float>(grid.zero_point),
                     static_cast<float>(grid.qmax()));
#pragma omp parallel if (rows * cols > 32768)
  {
    thread_local std::vector<float> row;  // one normalised row, cache-resident
    row.resize(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t src = source_row(r);
      uint8_t* out = codes + r * cols;
      if (src < 0) {
        std::fill(out, out + cols, zero_code);
      } else {
        LayerNormRow(x + src * cols, row.data(), cols, gamma, beta, eps);
        QuantizeActivationsSerial(row.data(), cols, grid, out);
      }
    }
  }
}

int64_t SameRow(int64_t r) { return r; }

}  // namespace

void LayerNormRows(const float* x, float* y, int64_t rows, int64_t cols, const float* gamma,
                   const float* beta, float eps) {
  LayerNormRowsFrom(x, SameRow, y, rows, cols, gamma, beta, eps);
}

void LayerNormRowsToCodes(const float* x, uint8_t* codes, int64_t rows, int64_t cols,
                          const float* gamma, const float* beta, float eps, const ActQuant& grid) {
  LayerNormRowsToCodesFrom(x, SameRow, codes, rows, cols, gamma, beta, eps, grid);
}

void LayerNormGatherRows(const float* x, const RowGather& gather, float* y, int64_t rows,
                         int64_t cols, const float* gamma, const float* beta, float eps) {
  LayerNormRowsFrom(
      x, [&](int64_t r) { return gather.SourceRow(r); }, y, rows, cols, gamma, beta, eps);
}

void LayerNormGatherRowsToCodes(const float* x, const RowGather& gather, uint8_t* codes,
                                int64_t rows, int64_t cols, const float* gamma, const float* beta,
                                float eps, const ActQuant& grid) {
  LayerNormRowsToCodesFrom(
      x, [&](int64_t r) { return gather.SourceRow(r); }, codes, rows, cols, gamma, beta, eps, grid);
}

void SoftmaxRows(float* x, int64_t rows, int64_t cols, const float* bias, int64_t bias_rows) {
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * cols;
    const float* bias_row = bias ? bias + (r % bias_rows) * cols : nullptr;
    const float sum = ExpShiftedRow(row, bias_row, row, cols);
    ScaleRow(row, cols, 1.0f / sum);
  }
}

void SoftmaxRowsToBf16(const float* x, uint16_t* y, int64_t rows, int64_t cols, const float* bias,
                       int64_t bias_rows) {
#pragma omp parallel
  {
    std::vector<float> e(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* bias_row = bias ? bias + (r % bias_rows) * cols : nullptr;
      const float sum = ExpShiftedRow(x + r * cols, bias_row, e.data(), cols);
      ScaleRowToBf16(e.data(), y + r * cols, cols, 1.0f / sum);
    }
  }
}

void SoftmaxRowsToCodes(const float* x, uint8_t* y, int64_t rows, int64_t cols, float inv_scale,
                        float qmax, const float* bias, int64_t bias_rows) {
#pragma omp parallel
  {
    std::vector<float> e(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* bias_row = bias ? bias + (r % bias_rows) * cols : nullptr;
      const float sum = ExpShiftedRow(x + r * cols, bias_row, e.data(), cols);
      ScaleRowToCodes(e.data(), y + r * cols, cols, 1.0f / sum, inv_scale, qmax);
    }
  }
}

void GeluErf(float* x, int64_t n) {
  ParallelChunks(n, [&](int64_t begin, int64_t len) { GeluChunk(x + begin, len); });
}

void GeluErfSerial(float* x, int64_t n) { GeluChunk(x, n); }

void AddInPlace(float* y, const float* x, int64_t n) {
  ParallelChunks(n, [&](int64_t begin, int64_t len) { AddChunk(y + begin, x + begin, len); });
}

void FloatToBf16Array(const float* src, uint16_t* dst, int64_t n) {
  ParallelChunks(n,
                 [&](int64_t begin, int64_t len) { ToBf16Chunk(src + begin, dst + begin, len); });
}

}  // namespace vitq
