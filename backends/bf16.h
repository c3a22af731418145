// bfloat16 conversions (round to nearest even), scalar and bulk.
#pragma once

#include <cstdint>
#include <cstring>

namespace vitq {

inline float Bf16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t FloatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// dst[i] = bf16(src[i]) for i < n; vectorised.
void FloatToBf16Array(const float* src, uint16_t* dst, int64_t n);

}  // namespace vitq
