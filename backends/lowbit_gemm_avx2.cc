// The AVX2 path of LowBitGemm. Compiled with -mavx2 -mfma; called only after
// __builtin_cpu_supports said yes. Everything but the two entry points has internal linkage (see
// lowbit_gemm_kernels.h for why).
//
// vpmaddubsw multiplies u8 inputs by s8 weights and adds adjacent pairs into saturating int16:
// exact here because |q_w| ≤ 7, so |pair| ≤ 2·255·7 = 3570 (and two of them, < 2^15, still add
// exactly in int16). vpmaddwd by ones then adds the pairs of each 4-k group into int32: the same
// sums vpdpbusd forms.
#include <immintrin.h>

#include <cstring>

#include "backends/lowbit_gemm_kernels.h"
#include "backends/ops.h"

namespace vitq::lowbit {
namespace {

constexpr int kRows = 4;  // rows per micro-kernel: 4 rows × 16 channels = 8 ymm accumulators

int32_t LoadU32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Biased codes of one tile into lo (values 0..31) and hi (values 32..63), per lowbit_gemm.h.
void Codes4(const uint8_t* p, __m256i& lo, __m256i& hi) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  lo = _mm256_and_si256(v, nibble);
  hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
}

void Codes2(const uint8_t* p, __m256i& lo, __m256i& hi) {
  // 128-bit lane i of (lo, hi) takes bits 2i..2i+1 of each of the 16 bytes.
  const __m256i v =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i two_bits = _mm256_set1_epi8(0x03);
  lo = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_set_epi64x(2, 2, 0, 0)), two_bits);
  hi = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_set_epi64x(6, 6, 4, 4)), two_bits);
}

// 32 mask bits → 32 bytes, 0x04 where the bit is set.
__m256i HighBits(uint32_t bits) {
  // Byte i takes mask byte i / 8 (vpshufb works per 128-bit lane; both lanes hold all 4 bytes).
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int32_t>(bits)),
      _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                       3, 3, 3, 3, 3, 3, 3));
  const __m256i select = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x04));
}

void Codes3(const uint8_t* p, __m256i& lo, __m256i& hi) {
  Codes2(p, lo, hi);
  uint64_t high;  // bit i: bit 2 of value i
  std::memcpy(&high, p + 16, sizeof(high));
  lo = _mm256_or_si256(lo, HighBits(static_cast<uint32_t>(high)));
  hi = _mm256_or_si256(hi, HighBits(static_cast<uint32_t>(high >> 32)));
}

template <int kBits>
void UnpackTiles(const uint8_t* packed, int64_t tiles, int8_t* out) {
  const __m256i bias = _mm256_set1_epi8(1 << (kBits - 1));
  for (int64_t t = 0; t < tiles; ++t) {
    const uint8_t* p = packed + t * 8 * kBits;
    __m256i lo, hi;
    if (kBits == 4) {
      Codes4(p, lo, hi);
    } else if (kBits == 2) {
      Codes2(p, lo, hi);
    } else {
      Codes3(p, lo, hi);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * t), _mm256_sub_epi8(lo, bias));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * t + 32), _mm256_sub_epi8(hi, bias));
  }
}

// acc − z_x·Σq_w → f32, then ·s_x·s_w + b (one fma: the scalar path rounds identically).
__m256 Affine(__m256i acc, const PanelTask& t, int c) {
  const __m256i corr = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.zero_correction + c));
  const __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc, corr));
  return _mm256_fmadd_ps(v, _mm256_loadu_ps(t.scale + c), _mm256_loadu_ps(t.bias + c));
}

// Affine results of up to kRows rows × 64 channels, GELU'd in whole rows as the other paths do.
struct alignas(64) RowTile {
  float v[kRows][64];
};

// R rows × the 16 channels of group g over the whole K → tile columns [16g, 16g + 16).
template <int R>
void RowBlock(const PanelTask& t, int64_t row0, int g, RowTile& tile) {
  __m256i acc[R][2];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  const uint8_t* a = t.codes + row0 * t.codes_stride;
  const int8_t* w = t.weights + 64 * g;
  const int64_t w_stride = 64 * t.groups;
  // Two k-groups per step: their vpmaddubsw pair sums (each ≤ 3570) add exactly in int16, so
  // one vpmaddwd widens both.
  int64_t kg = 0;
  for (; kg + 2 <= t.k_groups; kg += 2, w += 2 * w_stride) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));  // channels 0..7
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32));
    const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + w_stride));
    const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + w_stride + 32));
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256i a0 = _mm256_set1_epi32(LoadU32(a + r * t.codes_stride + 4 * kg));
      const __m256i a1 = _mm256_set1_epi32(LoadU32(a + r * t.codes_stride + 4 * kg + 4));
      const __m256i s0 =
          _mm256_add_epi16(_mm256_maddubs_epi16(a0, w0), _mm256_maddubs_epi16(a1, v0));
      const __m256i s1 =
          _mm256_add_epi16(_mm256_maddubs_epi16(a0, w1), _mm256_maddubs_epi16(a1, v1));
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(s0, ones));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(s1, ones));
    }
  }
  if (kg < t.k_groups) {  // an odd last k-group
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32));
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256i av = _mm256_set1_epi32(LoadU32(a + r * t.codes_stride + 4 * kg));
      acc[r][0] =
          _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(av, w0), ones));
      acc[r][1] =
          _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(av, w1), ones));
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_store_ps(tile.v[r] + 16 * g, Affine(acc[r][0], t, 16 * g));
    _mm256_store_ps(tile.v[r] + 16 * g + 8, Affine(acc[r][1], t, 16 * g + 8));
  }
}

void RowsOfGroup(const PanelTask& t, int64_t row0, int rows, int g, RowTile& tile) {
  switch (rows) {
    case 4: return RowBlock<4>(t, row0, g, tile);
    case 3: return RowBlock<3>(t, row0, g, tile);
    case 2: return RowBlock<2>(t, row0, g, tile);
    default: return RowBlock<1>(t, row0, g, tile);
  }
}

// row (width) f32, row r of the task → y: GELU if asked, then store or add (or quantize onto the
// output grid).
void FinishRow(const PanelTask& t, float* row, int64_t r) {
  if (t.gelu) GeluErfSerial(row, t.width);
  if (t.out_grid) return QuantizeRow(row, t.width, *t.out_grid, t.out_codes + r * t.ldc);
  float* y = t.y + r * t.ldy;
  int c = 0;
  for (; c + 8 <= t.width; c += 8) {
    __m256 v = _mm256_load_ps(row + c);
    if (t.accumulate) v = _mm256_add_ps(_mm256_loadu_ps(y + c), v);
    _mm256_storeu_ps(y + c, v);
  }
  for (; c < t.width; ++c) y[c] = t.accumulate ? y[c] + row[c] : row[c];
}

}  // namespace

void UnpackTilesAvx2(const uint8_t* packed, int bits, int64_t tiles, int8_t* out) {
  switch (bits) {
    case 4: return UnpackTiles<4>(packed, tiles, out);
    case 3: return UnpackTiles<3>(packed, tiles, out);
    default: return UnpackTiles<2>(packed, tiles, out);
  }
}

void PanelAvx2(const PanelTask& t) {
  RowTile tile;
  for (int64_t r = 0; r < t.rows; r += kRows) {
    const int rows = static_cast<int>(t.rows - r < kRows ? t.rows - r : kRows);
    for (int g = 0; g < t.groups; ++g) RowsOfGroup(t, r, rows, g, tile);
    for (int i = 0; i < rows; ++i) FinishRow(t, tile.v[i], r + i);
  }
}

}  // namespace vitq::lowbit
