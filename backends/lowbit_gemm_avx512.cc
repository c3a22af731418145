// The AVX512-VNNI path of LowBitGemm. Compiled with -mavx512f -mavx512bw -mavx512vnni; called
// only after __builtin_cpu_supports said yes. Everything but the two entry points has internal
// linkage (see lowbit_gemm_kernels.h for why).

// GCC 12's own AVX-512 intrinsics trip -Wmaybe-uninitialized through _mm512_undefined_*
// (GCC bug 105593, fixed in 13); silenced for the header's lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstring>

#include "backends/lowbit_gemm_kernels.h"
#include "backends/ops.h"

namespace vitq::lowbit {
namespace {

constexpr int kRows = 6;  // rows per micro-kernel: 6 rows × 4 groups = 24 zmm accumulators

int32_t LoadU32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// acc += Σ_{4 bytes} a (u8) · w (s8) per int32 lane. Written as asm because GCC 12 does not tie
// the accumulator of _mm512_dpbusd_epi32 to its output register: with 24 accumulators it copies
// each one through a scratch register every k step, and spills some (measured in the
// disassembly of RowBlock<6, 4>).
__m512i Dpbusd(__m512i acc, __m512i a, __m512i w) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "vm"(w));
  return acc;
}

// Biased codes u of one tile → (64) u8, in the tile's value order (lowbit_gemm.h).
__m512i Codes4(const uint8_t* p) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const __m256i lo = _mm256_and_si256(v, nibble);                         // values 0..31
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);  // values 32..63
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

__m512i Codes2(const uint8_t* p) {
  // 128-bit lane i takes bits 2i..2i+1 of each of the 16 bytes: shift whole qwords (a byte's
  // field never crosses into its neighbour within the 2 bits kept by the mask).
  const __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m512i shifts = _mm512_set_epi64(6, 6, 4, 4, 2, 2, 0, 0);
  return _mm512_and_si512(_mm512_srlv_epi64(v, shifts), _mm512_set1_epi8(0x03));
}

__m512i Codes3(const uint8_t* p) {
  uint64_t high;  // bit i: bit 2 of value i
  std::memcpy(&high, p + 16, sizeof(high));
  return _mm512_or_si512(Codes2(p), _mm512_maskz_mov_epi8(high, _mm512_set1_epi8(0x04)));
}

template <int kBits>
void UnpackTiles(const uint8_t* packed, int64_t tiles, int8_t* out) {
  const __m512i bias = _mm512_set1_epi8(1 << (kBits - 1));
  for (int64_t t = 0; t < tiles; ++t) {
    const uint8_t* p = packed + t * 8 * kBits;
    const __m512i codes = kBits == 4 ? Codes4(p) : kBits == 2 ? Codes2(p) : Codes3(p);
    _mm512_storeu_si512(out + 64 * t, _mm512_sub_epi8(codes, bias));
  }
}

__mmask16 LaneMask(int valid) {  // the first min(valid, 16) lanes
  return valid >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1);
}

// acc − z_x·Σq_w → f32, then ·s_x·s_w + b (one fma: the scalar path rounds identically).
__m512 Affine(__m512i acc, const PanelTask& t, int g) {
  const __m512i corr = _mm512_loadu_si512(t.zero_correction + 16 * g);
  const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, corr));
  return _mm512_fmadd_ps(v, _mm512_loadu_ps(t.scale + 16 * g), _mm512_loadu_ps(t.bias + 16 * g));
}

// Writes (or adds) the lanes of `mask` of v to y.
void Put(float* y, __mmask16 mask, __m512 v, bool accumulate) {
  if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, y), v);
  _mm512_mask_storeu_ps(y, mask, v);
}

template <int R, int G>
void StoreRows(const PanelTask& t, int64_t row0, __m512i (&acc)[R][G]) {
  __mmask16 mask[G];
  #pragma GCC unroll 8
  for (int g = 0; g < G; ++g) mask[g] = LaneMask(t.width - 16 * g);
  if (!t.gelu && !t.out_grid) {
    #pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      float* y = t.y + (row0 + r) * t.ldy;
      #pragma GCC unroll 8
      for (int g = 0; g < G; ++g) Put(y + 16 * g, mask[g], Affine(acc[r][g], t, g), t.accumulate);
    }
    return;
  }
  // GELU or codes out. Every accumulator is consumed before the first call: live across a call,
  // the 24 zmm accumulators would be kept in memory (all vector registers are caller-saved), in
  // the K loop too.
  alignas(64) float rows[R][16 * G];  // (R, width) affine results, then GELU in place
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    #pragma GCC unroll 8
    for (int g = 0; g < G; ++g) _mm512_store_ps(rows[r] + 16 * g, Affine(acc[r][g], t, g));
  }
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    if (t.gelu) GeluErfSerial(rows[r], t.width);
    if (t.out_grid) {
      QuantizeRow(rows[r], t.width, *t.out_grid, t.out_codes + (row0 + r) * t.ldc);
      continue;
    }
    float* y = t.y + (row0 + r) * t.ldy;
    #pragma GCC unroll 8
    for (int g = 0; g < G; ++g)
      Put(y + 16 * g, mask[g], _mm512_load_ps(rows[r] + 16 * g), t.accumulate);
  }
}

// R rows × 16·G channels over the whole K: per k-group G weight vectors, R broadcasts of 4
// input codes, R·G vpdpbusd (u8 input × s8 weight, 4 products summed per int32 lane).
template <int R, int G>
void RowBlock(const PanelTask& t, int64_t row0) {
  __m512i acc[R][G];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) acc[r][g] = _mm512_setzero_si512();
  }
  const uint8_t* a = t.codes + row0 * t.codes_stride;
  const int8_t* w = t.weights;
  for (int64_t kg = 0; kg < t.k_groups; ++kg, w += 64 * G) {
    __m512i wv[G];
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) wv[g] = _mm512_loadu_si512(w + 64 * g);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512i av = _mm512_set1_epi32(LoadU32(a + r * t.codes_stride + 4 * kg));
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) acc[r][g] = Dpbusd(acc[r][g], av, wv[g]);
    }
  }
  StoreRows<R, G>(t, row0, acc);
}

template <int G>
void PanelOfGroups(const PanelTask& t) {
  int64_t r = 0;
  for (; r + kRows <= t.rows; r += kRows) RowBlock<kRows, G>(t, r);
  switch (t.rows - r) {
    case 5: return RowBlock<5, G>(t, r);
    case 4: return RowBlock<4, G>(t, r);
    case 3: return RowBlock<3, G>(t, r);
    case 2: return RowBlock<2, G>(t, r);
    case 1: return RowBlock<1, G>(t, r);
    default: return;
  }
}

}  // namespace

void UnpackTilesAvx512(const uint8_t* packed, int bits, int64_t tiles, int8_t* out) {
  switch (bits) {
    case 4: return UnpackTiles<4>(packed, tiles, out);
    case 3: return UnpackTiles<3>(packed, tiles, out);
    default: return UnpackTiles<2>(packed, tiles, out);
  }
}

void PanelAvx512Vnni(const PanelTask& t) {
  switch (t.groups) {
    case 4: return PanelOfGroups<4>(t);
    case 3: return PanelOfGroups<3>(t);
    case 2: return PanelOfGroups<2>(t);
    default: return PanelOfGroups<1>(t);
  }
}

}  // namespace vitq::lowbit
