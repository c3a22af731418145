// Uniform quantizers shared by the integer kernels, the fake-quant reference and calibration.
//
// Weights: symmetric, per output channel, b bits:  q = clamp(round(w / s), -(2^(b-1) - 1), 2^(b-1)
// - 1)
//          (the range is symmetric, -7..7 at 4 bits, so that q and -q are both representable).
// Activations: asymmetric, per tensor, b bits:      q = clamp(round(x / s) + z, 0, 2^b - 1)
// round() is round-half-to-even everywhere (std::nearbyint), as the integer kernels do, so the
// fake-quant reference and the integer path see the same integers. One exception: an integer
// MLP's fc2 input is quantized in fc1's oneDNN epilogue as round(x / s + z), which can differ by
// one code at ties when z is odd, and where the fused float arithmetic rounds differently.
// (Our low-bit kernels quantize their epilogue rows with QuantizeActivationsSerial: exact.)
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace vitq {

struct ActQuant {
  int bits = 8;
  float scale = 1.0f;      // > 0
  int32_t zero_point = 0;  // in [0, 2^bits - 1]
  int32_t qmax() const { return (1 << bits) - 1; }
};

// Per-tensor asymmetric parameters covering [lo, hi] (always including 0, so that zero — padding,
// ReLU-like outputs — is exact).
ActQuant ActQuantFromRange(float lo, float hi, int bits);

struct WeightQuant {
  int bits = 8;
  std::vector<float> scales;   // (N) per output channel, > 0
  std::vector<int8_t> values;  // (N, K) row-major, |v| <= 2^(bits-1) - 1
  int64_t rows = 0, cols = 0;
  int32_t qmax() const { return (1 << (bits - 1)) - 1; }
};

// Max-abs per output channel of w: (N, K). An all-zero row gets scale 1 (any scale is exact).
WeightQuant QuantizeWeights(const float* w, int64_t n, int64_t k, int bits);
// Same with given scales (from an artifact or a scale search).
WeightQuant QuantizeWeightsWithScales(const float* w, int64_t n, int64_t k, int bits,
                                      std::vector<float> scales);

// x (count) → u8 codes; x_fq = (q - z)·s for the fake-quant path.
void QuantizeActivations(const float* x, int64_t count, const ActQuant& q, uint8_t* out);
// The same codes without OpenMP: for callers already inside a parallel region (a GEMM epilogue
// quantizing its rows), where even a disabled parallel region costs a team start per call.
void QuantizeActivationsSerial(const float* x, int64_t count, const ActQuant& q, uint8_t* out);
void FakeQuantActivations(const float* x, int64_t count, const ActQuant& q, float* out);
// Round half to even (std::nearbyint in the default rounding mode) by adding and subtracting
// 1.5·2^23: exact for |v| <= 2^22, and unlike nearbyint (a libm call) it vectorizes.
inline float RoundHalfEven(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

// std::clamp returns a reference chosen by branches, which keeps loops from vectorizing; this
// selects values.
inline float ClampValue(float v, float lo, float hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// The asymmetric code of x·inv_scale: what QuantizeActivations stores.
inline uint8_t ActivationCode(float x, float inv_scale, float zero_point, float qmax) {
  constexpr float kRoundLimit = 4194304.0f;  // 2^22: RoundHalfEven is exact up to here
  const float v = ClampValue(x * inv_scale, -kRoundLimit, kRoundLimit);
  return static_cast<uint8_t>(ClampValue(RoundHalfEven(v) + zero_point, 0.0f, qmax));
}

// The symmetric code of x·inv_scale with |code| <= qmax: what QuantizeSymmetric stores.
inline int8_t SymmetricCode(float x, float inv_scale, float qmax) {
  return static_cast<int8_t>(RoundHalfEven(ClampValue(x * inv_scale, -qmax, qmax)));
}

// Symmetric per-tensor codes of x: clamp(round(x / scale), -(2^(b-1) - 1), 2^(b-1) - 1), and
// their fp32 simulation (attention q, k, v).
void QuantizeSymmetric(const float* x, int64_t count, float scale, int bits, int8_t* out);
void FakeQuantSymmetric(float* x, int64_t count, float scale, int bits);

// Dequantized weights (N, K): values · scale[n].
std::vector<float> DequantizeWeights(const WeightQuant& w);

// Packs signed codes of `bits` ∈ [2, 8] (two's complement in `bits` bits) into bytes,
// little-endian bit order within a byte, no padding between values: ceil(count·bits/8) bytes.
std::vector<uint8_t> PackSigned(const std::vector<int8_t>& values, int bits);
// Inverse of PackSigned; INVALID_ARGUMENT if `packed` has the wrong size.
absl::StatusOr<std::vector<int8_t>> UnpackSigned(const std::vector<uint8_t>& packed, int64_t count,
                                                 int bits);

}  // namespace vitq
