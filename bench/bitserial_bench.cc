// Could a 2-bit × 2-bit layer run faster than int8 on this CPU? The question behind issue 8's
// "a rung faster than W8A8": W2A2 only pays if its integer dot products cost fewer cycles than
// VNNI's.
//
// Two register-blocked inner loops compute the same W2A2 sums Σ_k a[m,k]·q[n,k] (a ∈ 0..3,
// q ∈ −1..1), single-threaded, 192 rows × one 64-channel panel, K (the argument) = 384 (DeiT-S's
// width: qkv, fc1) or 1536 (fc2); the activations are already in each loop's layout (the bit-serial
// loop's plane packing is not timed, which favours it):
//   Vnni       the int8 route (what LowBitGemm and oneDNN do): s8 weights, u8 codes, 6 rows ×
//              64 channels, one vpdpbusd per 64 multiply-adds.
//   BitSerial  bit planes: a = a0 + 2·a1, u = q + 2 = u0 + 2·u1, Σ a·u = Σ_ij 2^(i+j)·
//              popcount(a_i & u_j) over 64 k per 64-bit lane; 4 rows × 16 channels, per 512
//              multiply-adds 4 vpandq + 4 vpopcntq + 4 vpaddq.
// Both check their sums against a scalar reference and fail the run on a mismatch. Reported:
// multiply-adds per second (items_per_second). Run:
//   build/release/bench/bitserial_bench --benchmark_min_time=0.5 --benchmark_repetitions=3
// This is a measurement, not a product kernel: see docs/PERFORMANCE.md for what it showed.

#include <benchmark/benchmark.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace {

constexpr int kM = 192, kN = 64;

struct Problem {
  int k = 0;                            // a multiple of 64
  std::vector<uint8_t> a;               // (M, K) activation codes 0..3
  std::vector<int8_t> q;                // (N, K) weight codes −1..1
  std::vector<int32_t> ref;             // (M, N) Σ_k a·q
  int words() const { return k / 64; }  // 64-bit words per bit plane of one row or channel
};

Problem MakeProblem(int depth) {
  Problem p;
  p.k = depth;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> act(0, 3), weight(-1, 1);
  p.a.resize(kM * depth);
  p.q.resize(kN * depth);
  for (auto& v : p.a) v = static_cast<uint8_t>(act(rng));
  for (auto& v : p.q) v = static_cast<int8_t>(weight(rng));
  p.ref.assign(kM * kN, 0);
  for (int m = 0; m < kM; ++m)
    for (int n = 0; n < kN; ++n)
      for (int k = 0; k < depth; ++k) p.ref[m * kN + n] += p.a[m * depth + k] * p.q[n * depth + k];
  return p;
}

__attribute__((target("avx512f,avx512vnni"))) __m512i Dpbusd(__m512i acc, __m512i a, __m512i w) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "vm"(w));  // keeps acc in its register
  return acc;
}

// ---- int8 route: weights (K/4, 4 groups, 16 channels, 4 k) s8, like LowBitGemm's panels ----
// VnniBlock is LowBitGemm's AVX512-VNNI micro-kernel (lowbit_gemm_avx512.cc, RowBlock) without
// its weight unpacking and fp32 epilogue, so that both routes are timed on their inner loop only.

std::vector<int8_t> VnniWeights(const Problem& p) {
  const int depth = p.k;
  std::vector<int8_t> w(kN * depth);
  for (int kg = 0; kg < depth / 4; ++kg)
    for (int n = 0; n < kN; ++n)
      for (int j = 0; j < 4; ++j) w[(kg * kN + n) * 4 + j] = p.q[n * depth + 4 * kg + j];
  return w;
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) void VnniBlock(const uint8_t* a,
                                                                      const int8_t* w, int depth,
                                                                      int32_t* out) {
  constexpr int R = 6, G = 4;
  __m512i acc[R][G];
  for (auto& row : acc)
    for (auto& v : row) v = _mm512_setzero_si512();
  for (int kg = 0; kg < depth / 4; ++kg, w += 64 * G) {
    __m512i wv[G];
    for (int g = 0; g < G; ++g) wv[g] = _mm512_loadu_si512(w + 64 * g);
    for (int r = 0; r < R; ++r) {
      int32_t four;
      std::memcpy(&four, a + r * depth + 4 * kg, 4);
      const __m512i av = _mm512_set1_epi32(four);
      for (int g = 0; g < G; ++g) acc[r][g] = Dpbusd(acc[r][g], av, wv[g]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) _mm512_storeu_si512(out + r * kN + 16 * g, acc[r][g]);
}

void VnniGemm(const uint8_t* a, const int8_t* w, int k, int32_t* out) {
  for (int m = 0; m < kM; m += 6) VnniBlock(a + m * k, w, k, out + m * kN);
}

// ---- bit-serial route: planes of 64 k per uint64 ----

struct Planes {
  std::vector<uint64_t> a;             // (M, 2 planes, words)
  std::vector<uint64_t> w;             // (N/8 groups, words, 2 planes, 8 channels)
  std::vector<int32_t> twice_row_sum;  // 2·Σ_k a[m,k]: undoes the weight bias u = q + 2
};

Planes MakePlanes(const Problem& p) {
  const int depth = p.k, words = p.words();
  Planes pl;
  pl.a.assign(kM * 2 * words, 0);
  pl.w.assign(kN * 2 * words, 0);
  pl.twice_row_sum.assign(kM, 0);
  for (int m = 0; m < kM; ++m)
    for (int k = 0; k < depth; ++k) {
      const int v = p.a[m * depth + k];
      for (int b = 0; b < 2; ++b)
        if ((v >> b) & 1) pl.a[(m * 2 + b) * words + k / 64] |= uint64_t{1} << (k % 64);
      pl.twice_row_sum[m] += 2 * v;
    }
  for (int n = 0; n < kN; ++n)
    for (int k = 0; k < depth; ++k) {
      const int u = p.q[n * depth + k] + 2;
      for (int b = 0; b < 2; ++b)
        if ((u >> b) & 1)
          pl.w[(((n / 8) * words + k / 64) * 2 + b) * 8 + n % 8] |= uint64_t{1} << (k % 64);
    }
  return pl;
}

__attribute__((target("avx512f,avx512vpopcntdq"))) __m512i PopAnd(__m512i x, __m512i y) {
  return _mm512_popcnt_epi64(_mm512_and_si512(x, y));
}

__attribute__((target("avx512f,avx512bw,avx512vpopcntdq"))) void BitSerialBlock(
    const uint64_t* a, const uint64_t* w, int words, const int32_t* twice_row_sum, int32_t* out) {
  constexpr int R = 4, G = 2;  // 24 int64 accumulators (8 channels each)
  __m512i lo[R][G], mid[R][G], hi[R][G];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) lo[r][g] = mid[r][g] = hi[r][g] = _mm512_setzero_si512();
  for (int kw = 0; kw < words; ++kw) {
    __m512i w0[G], w1[G];
    for (int g = 0; g < G; ++g) {
      const uint64_t* wg = w + ((g * words + kw) * 2) * 8;
      w0[g] = _mm512_loadu_si512(wg);
      w1[g] = _mm512_loadu_si512(wg + 8);
    }
    for (int r = 0; r < R; ++r) {
      const __m512i a0 = _mm512_set1_epi64(static_cast<int64_t>(a[(r * 2) * words + kw]));
      const __m512i a1 = _mm512_set1_epi64(static_cast<int64_t>(a[(r * 2 + 1) * words + kw]));
      for (int g = 0; g < G; ++g) {
        lo[r][g] = _mm512_add_epi64(lo[r][g], PopAnd(a0, w0[g]));
        mid[r][g] = _mm512_add_epi64(mid[r][g], PopAnd(a0, w1[g]));
        mid[r][g] = _mm512_add_epi64(mid[r][g], PopAnd(a1, w0[g]));
        hi[r][g] = _mm512_add_epi64(hi[r][g], PopAnd(a1, w1[g]));
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) {
      // lo + 2·(mid + 2·hi), by adds (GCC 12's shift intrinsics warn, bug 105593)
      const __m512i mid_hi = _mm512_add_epi64(mid[r][g], _mm512_add_epi64(hi[r][g], hi[r][g]));
      __m512i s = _mm512_add_epi64(lo[r][g], _mm512_add_epi64(mid_hi, mid_hi));
      s = _mm512_sub_epi64(s, _mm512_set1_epi64(twice_row_sum[r]));
      _mm512_mask_cvtepi64_storeu_epi32(out + r * kN + 8 * g, 0xFF, s);  // 8 × int64 → int32
    }
}

void BitSerialGemm(const Planes& pl, int words, int32_t* out) {
  for (int m = 0; m < kM; m += 4)
    for (int n = 0; n < kN; n += 16)
      BitSerialBlock(pl.a.data() + m * 2 * words, pl.w.data() + (n / 8) * words * 2 * 8, words,
                     pl.twice_row_sum.data() + m, out + m * kN + n);
}

bool CpuHas(bool popcnt) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
         (!popcnt || __builtin_cpu_supports("avx512vpopcntdq"));
}

void Finish(benchmark::State& state, const Problem& p, const std::vector<int32_t>& out) {
  if (out != p.ref) state.SkipWithError("sums differ from the scalar reference");
  state.SetItemsProcessed(state.iterations() * int64_t{kM} * p.k * kN);
}

void BM_W2A2_Vnni(benchmark::State& state) {
  if (!CpuHas(false)) return state.SkipWithError("no AVX512-VNNI");
  const Problem p = MakeProblem(static_cast<int>(state.range(0)));
  const std::vector<int8_t> w = VnniWeights(p);
  std::vector<int32_t> out(kM * kN);
  for (auto _ : state) {
    VnniGemm(p.a.data(), w.data(), p.k, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  Finish(state, p, out);
}
BENCHMARK(BM_W2A2_Vnni)->Arg(384)->Arg(1536);

void BM_W2A2_BitSerial(benchmark::State& state) {
  if (!CpuHas(true)) return state.SkipWithError("no AVX512-VPOPCNTDQ");
  const Problem p = MakeProblem(static_cast<int>(state.range(0)));
  const Planes pl = MakePlanes(p);
  std::vector<int32_t> out(kM * kN);
  for (auto _ : state) {
    BitSerialGemm(pl, p.words(), out.data());
    benchmark::DoNotOptimize(out.data());
  }
  Finish(state, p, out);
}
BENCHMARK(BM_W2A2_BitSerial)->Arg(384)->Arg(1536);

}  // namespace

BENCHMARK_MAIN();
