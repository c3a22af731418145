// The per-ISA pieces of LowBitGemm (backends/lowbit_gemm.h), behind one plain-C-like interface.
//
// Each ISA lives in its own file compiled with that ISA's flags (lowbit_gemm_avx512.cc with
// -mavx512f -mavx512bw -mavx512vnni, lowbit_gemm_avx2.cc with -mavx2 -mfma). Those files must
// not instantiate inline functions or templates with external linkage (std::min, std::vector,
// ...): the linker may keep their AVX-512 copy for the whole program. Only this header, plain
// types and intrinsics go in; helpers live in anonymous namespaces.
#pragma once

#include <cstdint>

namespace vitq {
struct ActQuant;
}

namespace vitq::lowbit {

// One panel's work: rows [0, rows) of the input against up to 64 output channels.
struct PanelTask {
  const int8_t* weights;  // (k_groups, groups, 16, 4) s8: the unpacked panel, 64-byte aligned
  int64_t k_groups;       // padded K / 4
  int groups;             // 16-channel groups in the panel, 1..4
  int width;              // valid output channels, 16·(groups − 1) < width ≤ 16·groups
  const uint8_t* codes;   // (rows, codes_stride) u8: the input rows, K padded to 4·k_groups
  int64_t codes_stride;
  int64_t rows;
  const int32_t* zero_correction;  // (16·groups) z_x·Σ_k q_w[n,k], zero past width
  const float* scale;              // (16·groups) s_x·s_w[n]
  const float* bias;               // (16·groups) b[n]
  float* y;                        // (rows, ldy) f32, at the panel's first channel
  int64_t ldy;
  bool gelu;        // GELU (exact erf, GeluErfSerial) on the affine result
  bool accumulate;  // y += result instead of y = result
  // When set, y is not written: the results (after GELU) are quantized onto *out_grid as u8
  // codes into out_codes, (rows, ldc) at the panel's first channel, as QuantizeActivations would.
  const ActQuant* out_grid = nullptr;
  uint8_t* out_codes = nullptr;
  int64_t ldc = 0;
};

// QuantizeActivations of one result row (width ≤ 64) onto the output grid. Defined in
// lowbit_gemm.cc, which is compiled without ISA flags, for every path.
void QuantizeRow(const float* row, int width, const ActQuant& grid, uint8_t* out);

// Unpacks `tiles` consecutive packed tiles of `bits` ∈ {2, 3, 4} into out (tiles, 64) s8.
using UnpackTilesFn = void (*)(const uint8_t* packed, int bits, int64_t tiles, int8_t* out);
using PanelFn = void (*)(const PanelTask& task);

// The tile encoding of lowbit_gemm.h, defined once: values (64) s8 in 4·c + j order, each
// |v| ≤ 2^(bits−1) − 1 → out (8·bits bytes).
void PackTile(const int8_t* values, int bits, uint8_t* out);

void UnpackTilesScalar(const uint8_t* packed, int bits, int64_t tiles, int8_t* out);
void PanelScalar(const PanelTask& task);

// x86-64 builds only (CMake defines VITQ_LOWBIT_X86 when it compiles these files).
void UnpackTilesAvx2(const uint8_t* packed, int bits, int64_t tiles, int8_t* out);
void PanelAvx2(const PanelTask& task);
void UnpackTilesAvx512(const uint8_t* packed, int bits, int64_t tiles, int8_t* out);
void PanelAvx512Vnni(const PanelTask& task);

}  // namespace vitq::lowbit
