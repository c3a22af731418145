#include "backends/quantize.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace vitq {
ActQuant ActQuantFromRange(float lo, float hi, int bits) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  ActQuant q;
  q.bits = bits;
  const float span = hi - lo;
  q.scale = span > 0 ? span / q.qmax() : 1.0f;
  q.zero_point =
      static_cast<int32_t>(std::clamp(std::nearbyint(-lo / q.scale), 0.0f, float(q.qmax())));
  return q;
}

WeightQuant QuantizeWeightsWithScales(const float* w, int64_t n, int64_t k, int bits,
                                      std::vector<float> scales) {
  WeightQuant q;
  q.bits = bits;
  q.rows = n;
  q.cols = k;
  q.scales = std::move(scales);
  q.values.resize(n * k);
  const float qmax = static_cast<float>(q.qmax());
  for (int64_t r = 0; r < n; ++r) {
    const float inv = 1.0f / q.scales[r];
    for (int64_t c = 0; c < k; ++c) {
      q.values[r * k + c] =
          static_cast<int8_t>(std::clamp(std::nearbyint(w[r * k + c] * inv), -qmax, qmax));
    }
  }
  return q;
}

WeightQuant QuantizeWeights(const float* w, int64_t n, int64_t k, int bits) {
  const float qmax = static_cast<float>((1 << (bits - 1)) - 1);
  std::vector<float> scales(n);
  for (int64_t r = 0; r < n; ++r) {
    float m = 0.0f;
    for (int64_t c = 0; c < k; ++c) m = std::max(m, std::fabs(w[r * k + c]));
    scales[r] = m > 0 ? m / qmax : 1.0f;
  }
  return QuantizeWeightsWithScales(w, n, k, bits, std::move(scales));
}

// The four element-wise quantizers below are built for AVX-512, AVX2 and the baseline, picked at
// load time (target_clones); each clamps before rounding, which gives the same codes as
// rounding first because every bound is an integer.
__attribute__((target_clones("avx512f", "avx2", "default"))) void QuantizeActivations(
    const float* x, int64_t count, const ActQuant& q, uint8_t* out) {
  const float inv = 1.0f / q.scale, zp = static_cast<float>(q.zero_point),
              hi = static_cast<float>(q.qmax());
#pragma omp parallel for simd schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) out[i] = ActivationCode(x[i], inv, zp, hi);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void QuantizeActivationsSerial(
    const float* x, int64_t count, const ActQuant& q, uint8_t* out) {
  const float inv = 1.0f / q.scale, zp = static_cast<float>(q.zero_point),
              hi = static_cast<float>(q.qmax());
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) out[i] = ActivationCode(x[i], inv, zp, hi);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void FakeQuantActivations(
    const float* x, int64_t count, const ActQuant& q, float* out) {
  const float inv = 1.0f / q.scale, zp = static_cast<float>(q.zero_point),
              hi = static_cast<float>(q.qmax());
#pragma omp parallel for simd schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) {
    out[i] = (static_cast<float>(ActivationCode(x[i], inv, zp, hi)) - zp) * q.scale;
  }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void QuantizeSymmetric(
    const float* x, int64_t count, float scale, int bits, int8_t* out) {
  const float inv = 1.0f / scale, hi = static_cast<float>((1 << (bits - 1)) - 1);
#pragma omp parallel for simd schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) {
    out[i] = SymmetricCode(x[i], inv, hi);
  }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void FakeQuantSymmetric(float* x,
                                                                                     int64_t count,
                                                                                     float scale,
                                                                                     int bits) {
  const float inv = 1.0f / scale, hi = static_cast<float>((1 << (bits - 1)) - 1);
#pragma omp parallel for simd schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) x[i] = RoundHalfEven(ClampValue(x[i] * inv, -hi, hi)) * scale;
}

std::vector<float> DequantizeWeights(const WeightQuant& w) {
  std::vector<float> out(w.values.size());
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t c = 0; c < w.cols; ++c)
      out[r * w.cols + c] = w.values[r * w.cols + c] * w.scales[r];
  }
  return out;
}

std::vector<uint8_t> PackSigned(const std::vector<int8_t>& values, int bits) {
  if (bits == 8) return std::vector<uint8_t>(values.begin(), values.end());
  std::vector<uint8_t> out((values.size() * bits + 7) / 8, 0);
  const uint32_t mask = (1u << bits) - 1;
  for (size_t i = 0; i < values.size(); ++i) {
    const uint32_t code = static_cast<uint32_t>(values[i]) & mask;
    const size_t bit = i * bits;
    out[bit / 8] |= static_cast<uint8_t>(code << (bit % 8));
    if (bit % 8 + bits > 8) out[bit / 8 + 1] |= static_cast<uint8_t>(code >> (8 - bit % 8));
  }
  return out;
}

absl::StatusOr<std::vector<int8_t>> UnpackSigned(const std::vector<uint8_t>& packed, int64_t count,
                                                 int bits) {
  const size_t want = (static_cast<size_t>(count) * bits + 7) / 8;
  if (packed.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat("packed ", bits, "-bit data has ", packed.size(),
                                                   " bytes, ", count, " values need ", want));
  }
  if (bits == 8) return std::vector<int8_t>(packed.begin(), packed.end());
  std::vector<int8_t> out(count);
  const uint32_t mask = (1u << bits) - 1, sign = 1u << (bits - 1);
  for (int64_t i = 0; i < count; ++i) {
    const size_t bit = static_cast<size_t>(i) * bits;
    uint32_t code = packed[bit / 8] >> (bit % 8);
    if (bit % 8 + bits > 8) code |= static_cast<uint32_t>(packed[bit / 8 + 1]) << (8 - bit % 8);
    code &= mask;
    out[i] = static_cast<int8_t>((code ^ sign) - sign);  // sign-extend
  }
  return out;
}

}  // namespace vitq
