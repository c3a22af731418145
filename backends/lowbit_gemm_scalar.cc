// The tile encoding and the scalar reference path of LowBitGemm. The SIMD paths must agree with
// this file bit for bit (tests/backends/lowbit_gemm_test.cc).
#include <cmath>

#include "backends/lowbit_gemm_kernels.h"
#include "backends/ops.h"

namespace vitq::lowbit {
namespace {

constexpr int kTileValues = 64;

// Where value i of a tile lives: `byte` and `shift` of its low bits (2-bit field for 2 and 3
// bits, a nibble for 4 bits), per the layouts in lowbit_gemm.h.
struct Field {
  int byte, shift;
};
Field LowField(int bits, int i) {
  return bits == 4 ? Field{i % 32, 4 * (i / 32)} : Field{i % 16, 2 * (i / 16)};
}

uint32_t TileCode(const uint8_t* tile, int bits, int i) {
  const Field f = LowField(bits, i);
  const uint32_t low_mask = bits == 4 ? 0xF : 0x3;
  uint32_t code = (static_cast<uint32_t>(tile[f.byte]) >> f.shift) & low_mask;
  if (bits == 3) code |= ((static_cast<uint32_t>(tile[16 + i / 8]) >> (i % 8)) & 1u) << 2;
  return code;
}

// The fp32 tail shared by every path: GELU, then store or add (or quantize onto the output
// grid).   row: (width) f32; r: the row's index in the task
void FinishRow(float* row, const PanelTask& t, int64_t r) {
  if (t.gelu) GeluErfSerial(row, t.width);
  if (t.out_grid) return QuantizeRow(row, t.width, *t.out_grid, t.out_codes + r * t.ldc);
  float* y = t.y + r * t.ldy;
  for (int c = 0; c < t.width; ++c) y[c] = t.accumulate ? y[c] + row[c] : row[c];
}

}  // namespace

void PackTile(const int8_t* values, int bits, uint8_t* out) {
  const int bias = 1 << (bits - 1);
  for (int b = 0; b < 8 * bits; ++b) out[b] = 0;
  for (int i = 0; i < kTileValues; ++i) {
    const uint32_t code = static_cast<uint32_t>(values[i] + bias);  // 1..2^bits − 1
    const Field f = LowField(bits, i);
    const uint32_t low = bits == 4 ? code : code & 0x3;
    out[f.byte] = static_cast<uint8_t>(out[f.byte] | (low << f.shift));
    if (bits == 3) out[16 + i / 8] = static_cast<uint8_t>(out[16 + i / 8] | ((code >> 2) << (i % 8)));
  }
}

void UnpackTilesScalar(const uint8_t* packed, int bits, int64_t tiles, int8_t* out) {
  const int bias = 1 << (bits - 1);
  for (int64_t t = 0; t < tiles; ++t) {
    const uint8_t* tile = packed + t * 8 * bits;
    for (int i = 0; i < kTileValues; ++i)
      out[t * kTileValues + i] = static_cast<int8_t>(static_cast<int>(TileCode(tile, bits, i)) - bias);
  }
}

void PanelScalar(const PanelTask& t) {
  alignas(64) float row[64];  // (width) the affine results of one input row; aligned as in the
                              // SIMD paths, so GeluErfSerial splits it the same way
  for (int64_t r = 0; r < t.rows; ++r) {
    const uint8_t* a = t.codes + r * t.codes_stride;
    for (int c = 0; c < t.width; ++c) {
      // Channel c is lane c % 16 of group c / 16; its 4 k of each k-group are adjacent.
      const int8_t* w = t.weights + (c / 16) * kTileValues + (c % 16) * 4;
      int32_t acc = 0;
      for (int64_t g = 0; g < t.k_groups; ++g, w += kTileValues * t.groups) {
        for (int j = 0; j < 4; ++j) acc += static_cast<int32_t>(a[4 * g + j]) * w[j];
      }
      row[c] = std::fma(static_cast<float>(acc - t.zero_correction[c]), t.scale[c], t.bias[c]);
    }
    FinishRow(row, t, r);
  }
}

}  // namespace vitq::lowbit
