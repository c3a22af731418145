// LowBitGemm: y (+)= act(s_x·s_w[n]·Σ_k (q_x[m,k] − z_x)·q_w[n,k] + b[n]) with 2-, 3- or 4-bit
// weights that stay packed in memory.
//
// Why not oneDNN: its int8 matmul wants s8 weights, so a 4-bit layer would sit in RAM (and cross
// the memory bus) at 8 bits. Here the weights are kept at bits/8 of int8 and unpacked to s8
// inside the kernel, one panel of 64 output channels at a time, into a cache-resident buffer that
// every row of the input then sweeps.
//
// Packed layout (PackedLowBitWeights). The unit is a tile of 16 output channels × 4 consecutive
// k: once unpacked it is one 64-byte vector, channel-major, 4 k per channel, exactly the operand
// of one AVX512-VNNI vpdpbusd (or two AVX2 vpmaddubsw):
//     tile byte 4·c + j = q_w[n0 + c, k0 + j]            (c < 16, j < 4)
// K is padded to a multiple of 4 and N to a multiple of 16 with zero weights. Tiles are stored
// panel by panel (64 channels = 4 channel groups, the last panel may have fewer groups), within
// a panel k-group by k-group, and within a k-group channel group by channel group, so a panel
// unpacks with one linear pass into the order the micro-kernel reads. Each tile's 64 values are
// stored as biased codes u = q + 2^(bits−1) (in 1..2^bits − 1) in 8·bits bytes:
//     4 bits, 32 bytes: byte j = u[j] | u[j+32] << 4                              (j < 32)
//     2 bits, 16 bytes: byte j = u[j] | u[j+16] << 2 | u[j+32] << 4 | u[j+48] << 6  (j < 16)
//     3 bits, 24 bytes: bytes 0..15 the 2-bit packing of u & 3, bytes 16..23 a 64-bit
//                       little-endian mask whose bit i is u[i] >> 2 (a 2+1 bit-plane split)
// Each encoding unpacks with a handful of SIMD shifts/masks per 64 values (no gathers, no
// cross-lane shuffles) and the resident size is exactly round16(N)·round4(K)·bits/8 bytes.
//
// Kernel: per panel, unpack its whole K into a thread-local (K/4, groups, 16, 4) s8 buffer (24 KB
// at K = 384: L1-resident), then sweep every input row over it. AVX512-VNNI micro-kernel:
// 6 rows × 64 channels, 24 zmm int32 accumulators; per k-group 4 weight loads, 6 broadcasts of
// 4 input codes, 24 vpdpbusd. AVX2: 4 rows × 16 channels, 8 ymm accumulators, two k-groups per
// vpmaddwd. The input is quantized to u8 once per call, rows padded to K/4 (the zero weights make
// the padding codes irrelevant). Measured at DeiT-S shapes (M = 1576, 1 thread): on par with
// oneDNN's VNNI int8 matmul (0.89–0.98×, bench/engine_bench.cc IntLinear/*).
//
// ISA paths: AVX512-VNNI (vpdpbusd), AVX2 (vpmaddubsw + vpmaddwd: exact because |q_w| ≤ 7, so a
// u8×s8 pair sum is ≤ 2·255·7 < 2^15 — the reason 8-bit weights are not accepted) and a scalar
// reference. All paths compute the same int32 sums and the same fp32 epilogue
// fma(float(acc − z_x·Σ_k q_w), s_x·s_w[n], b[n]), so their outputs are bit-identical.
// The path: SetLowBitIsaOverride() if set, else VITQ_LOWBIT_ISA=avx512_vnni|avx2|scalar (read
// once; a name this CPU cannot run is ignored), else the best the CPU supports.
//
// Threading: OpenMP over panels (and over row blocks when the panel count does not divide among
// the threads). Run is const and thread-safe; each thread has its own unpack buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backends/linear.h"
#include "backends/quantize.h"

namespace vitq {

enum class LowBitIsa { kScalar, kAvx2, kAvx512Vnni };

const char* LowBitIsaName(LowBitIsa isa);  // "scalar", "avx2", "avx512_vnni"
std::optional<LowBitIsa> ParseLowBitIsa(std::string_view name);
// Compiled in and supported by this CPU (and its OS: __builtin_cpu_supports checks XCR0).
bool LowBitIsaAvailable(LowBitIsa isa);
// The path the next Run takes (see the header comment).
LowBitIsa ActiveLowBitIsa();
// Forces `isa` for every later Run in the process; nullopt goes back to the default.
// INVALID_ARGUMENT if this CPU cannot run it. For tests and benchmarks.
absl::Status SetLowBitIsaOverride(std::optional<LowBitIsa> isa);

// The resident weights of one layer, in the tile layout above.
class PackedLowBitWeights {
 public:
  static constexpr int kGroupChannels = 16;  // output channels per tile / per vector
  static constexpr int kTileK = 4;           // k per tile (the vpdpbusd depth)
  static constexpr int kTileValues = kGroupChannels * kTileK;
  static constexpr int kPanelGroups = 4;  // channel groups per panel: 64 channels
  static constexpr int kPanelChannels = kPanelGroups * kGroupChannels;

  PackedLowBitWeights() = default;
  // INVALID_ARGUMENT unless w.bits ∈ {2, 3, 4} and |values| ≤ 2^(bits−1) − 1.
  static absl::StatusOr<PackedLowBitWeights> Pack(const WeightQuant& w);

  // The (N, K) codes back, row-major (the inverse of Pack, for tests).
  std::vector<int8_t> Unpack() const;

  int bits() const { return bits_; }
  int64_t rows() const { return n_; }  // N, output channels
  int64_t cols() const { return k_; }  // K, input features
  int64_t padded_cols() const { return kp_; }
  int64_t panels() const { return (groups_ + kPanelGroups - 1) / kPanelGroups; }
  int panel_groups(int64_t p) const;  // 1..4 channel groups in panel p
  int64_t panel_tiles(int64_t p) const { return panel_groups(p) * (kp_ / kTileK); }
  const uint8_t* panel_data(int64_t p) const;
  int64_t tile_bytes() const { return kTileValues * bits_ / 8; }
  size_t size_bytes() const { return bytes_.size(); }  // resident size

 private:
  int bits_ = 0;
  int64_t n_ = 0, k_ = 0, kp_ = 0, groups_ = 0;
  std::vector<uint8_t> bytes_;
};

class LowBitGemm {
 public:
  // w: the layer's codes and per-channel scales (2..4 bits); act: the input's quantizer;
  // bias: N floats or empty. INVALID_ARGUMENT on other bit widths, a wrong bias length, or K so
  // large that the int32 sums could overflow.
  static absl::StatusOr<LowBitGemm> Create(const WeightQuant& w, const ActQuant& act,
                                           std::vector<float> bias);

  // codes: (m, padded_k()) u8, the padding columns any value (the weights there are 0).
  // y: (m, n()) f32.  y = act(...), or y += act(...) when `accumulate` (act before the add, as a
  // oneDNN eltwise-then-sum post-op chain).
  void Run(const uint8_t* codes, int64_t m, float* y, Activation activation,
           bool accumulate) const;
  // Same, the results quantized onto `grid` instead (QuantizeActivations of what Run would
  // write): out (m, n()) u8 codes, for a next layer that reads codes.
  void RunToCodes(const uint8_t* codes, int64_t m, Activation activation, const ActQuant& grid,
                  uint8_t* out) const;

  int64_t n() const { return weights_.rows(); }
  int64_t k() const { return weights_.cols(); }
  int64_t padded_k() const { return weights_.padded_cols(); }
  const PackedLowBitWeights& weights() const { return weights_; }
  // Everything the layer keeps: packed weights plus the per-channel epilogue vectors.
  size_t resident_bytes() const;

 private:
  struct Output {
    float* y = nullptr;
    bool accumulate = false;
    const ActQuant* out_grid = nullptr;  // set: u8 codes into `out` instead of y
    uint8_t* out = nullptr;
  };
  void RunPanels(const uint8_t* codes, int64_t m, Activation activation,
                 const Output& output) const;

  PackedLowBitWeights weights_;
  // Per output channel, padded with zeros to whole panels (the kernels read 16 at a time):
  std::vector<int32_t> zero_correction_;  // z_x·Σ_k q_w[n,k]
  std::vector<float> scale_;              // s_x·s_w[n]
  std::vector<float> bias_;               // b[n], 0 without a bias
};

// QuantizeActivations row by row into a buffer with a longer row stride:
// x (m, k) f32 → out (m, padded_k) u8, the padding columns set to the zero point.
void QuantizeActivationsPadded(const float* x, int64_t m, int64_t k, int64_t padded_k,
                               const ActQuant& q, uint8_t* out);

}  // namespace vitq
