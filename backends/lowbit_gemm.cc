#include "backends/lowbit_gemm.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "backends/lowbit_gemm_kernels.h"

namespace vitq {
namespace {

using Packed = PackedLowBitWeights;

// The int32 sums stay exact while 255·7·K < 2^31 (the largest |(q_x − z_x)·q_w| is 255·7).
constexpr int64_t kMaxCols = int64_t{1} << 20;
// Below this many multiply-adds a GEMM runs on the calling thread: an OpenMP team costs a few
// microseconds, the whole product less (batch-1 layers of a small model).
constexpr int64_t kMinParallelMacs = int64_t{1} << 18;
// Rows per AVX-512 micro-kernel call; row blocks are multiples of it so only the last is short.
constexpr int64_t kRowQuantum = 6;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

// ---- ISA selection --------------------------------------------------------------------------

struct IsaKernels {
  lowbit::UnpackTilesFn unpack;
  lowbit::PanelFn panel;
};

IsaKernels KernelsFor(LowBitIsa isa) {
#if VITQ_LOWBIT_X86
  switch (isa) {
    case LowBitIsa::kAvx512Vnni:
      return {lowbit::UnpackTilesAvx512, lowbit::PanelAvx512Vnni};
    case LowBitIsa::kAvx2:
      return {lowbit::UnpackTilesAvx2, lowbit::PanelAvx2};
    case LowBitIsa::kScalar:
      break;
  }
#else
  (void)isa;
#endif
  return {lowbit::UnpackTilesScalar, lowbit::PanelScalar};
}

LowBitIsa BestIsa() {
  for (LowBitIsa isa : {LowBitIsa::kAvx512Vnni, LowBitIsa::kAvx2}) {
    if (LowBitIsaAvailable(isa)) return isa;
  }
  return LowBitIsa::kScalar;
}

// VITQ_LOWBIT_ISA if it names a path this CPU runs, else the best; read on first use only.
LowBitIsa DefaultIsa() {
  static const LowBitIsa isa = [] {
    if (const char* env = std::getenv("VITQ_LOWBIT_ISA")) {
      const std::optional<LowBitIsa> named = ParseLowBitIsa(env);
      if (named && LowBitIsaAvailable(*named)) return *named;
    }
    return BestIsa();
  }();
  return isa;
}

constexpr int kNoOverride = -1;
std::atomic<int> isa_override{kNoOverride};

// ---- Threading ------------------------------------------------------------------------------

// A 64-byte aligned scratch buffer per thread, for one unpacked panel; grows, never shrinks.
int8_t* ThreadPanelBuffer(size_t bytes) {
  struct AlignedFree {
    void operator()(int8_t* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  thread_local std::unique_ptr<int8_t[], AlignedFree> buffer;
  thread_local size_t capacity = 0;
  if (capacity < bytes) {
    buffer.reset(static_cast<int8_t*>(::operator new[](bytes, std::align_val_t{64})));
    capacity = bytes;
  }
  return buffer.get();
}

// Row blocks per panel so that panels × blocks divides evenly among the threads (6 panels on
// 2 threads: 1; 3 panels: 2). Each block unpacks its panel again, which costs little next to
// the rows it sweeps; small M keeps one block.
int64_t RowBlocks(int64_t m, int64_t panels, int threads) {
  const int64_t blocks = threads / std::gcd(panels, static_cast<int64_t>(threads));
  return std::clamp<int64_t>(blocks, 1, CeilDiv(m, kRowQuantum));
}

}  // namespace

// ---- ISA control ----------------------------------------------------------------------------

const char* LowBitIsaName(LowBitIsa isa) {
  switch (isa) {
    case LowBitIsa::kAvx512Vnni:
      return "avx512_vnni";
    case LowBitIsa::kAvx2:
      return "avx2";
    case LowBitIsa::kScalar:
      break;
  }
  return "scalar";
}

std::optional<LowBitIsa> ParseLowBitIsa(std::string_view name) {
  for (LowBitIsa isa : {LowBitIsa::kScalar, LowBitIsa::kAvx2, LowBitIsa::kAvx512Vnni}) {
    if (name == LowBitIsaName(isa)) return isa;
  }
  return std::nullopt;
}

bool LowBitIsaAvailable(LowBitIsa isa) {
#if VITQ_LOWBIT_X86
  switch (isa) {
    case LowBitIsa::kAvx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vnni");
    case LowBitIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case LowBitIsa::kScalar:
      return true;
  }
#endif
  return isa == LowBitIsa::kScalar;
}

LowBitIsa ActiveLowBitIsa() {
  const int forced = isa_override.load(std::memory_order_relaxed);
  return forced == kNoOverride ? DefaultIsa() : static_cast<LowBitIsa>(forced);
}

absl::Status SetLowBitIsaOverride(std::optional<LowBitIsa> isa) {
  if (isa && !LowBitIsaAvailable(*isa)) {
    return absl::InvalidArgumentError(
        absl::StrCat("this CPU cannot run the ", LowBitIsaName(*isa), " low-bit kernels"));
  }
  isa_override.store(isa ? static_cast<int>(*isa) : kNoOverride, std::memory_order_relaxed);
  return absl::OkStatus();
}

// ---- Packing --------------------------------------------------------------------------------

absl::StatusOr<Packed> Packed::Pack(const WeightQuant& w) {
  if (w.bits < 2 || w.bits > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("low-bit kernels take 2-, 3- or 4-bit weights, not ", w.bits));
  }
  if (w.rows <= 0 || w.cols <= 0 || w.cols > kMaxCols ||
      static_cast<int64_t>(w.values.size()) != w.rows * w.cols) {
    return absl::InvalidArgumentError(absl::StrCat("bad weight shape (", w.rows, ", ", w.cols,
                                                   ") with ", w.values.size(), " values"));
  }
  const int8_t qmax = static_cast<int8_t>(w.qmax());
  for (int8_t v : w.values) {
    if (v < -qmax || v > qmax)
      return absl::InvalidArgumentError(absl::StrCat("weight code ", v, " outside ±", qmax));
  }
  Packed p;
  p.bits_ = w.bits;
  p.n_ = w.rows;
  p.k_ = w.cols;
  p.kp_ = RoundUp(w.cols, kTileK);
  p.groups_ = CeilDiv(w.rows, kGroupChannels);
  p.bytes_.resize(static_cast<size_t>(p.groups_ * (p.kp_ / kTileK) * p.tile_bytes()));
  uint8_t* out = p.bytes_.data();
  int8_t tile[kTileValues];  // (16, 4): channel-major, 4 k per channel
  for (int64_t panel = 0; panel < p.panels(); ++panel) {
    for (int64_t kg = 0; kg < p.kp_ / kTileK; ++kg) {
      for (int g = 0; g < p.panel_groups(panel); ++g) {
        for (int i = 0; i < kTileValues; ++i) {
          const int64_t n = panel * kPanelChannels + g * kGroupChannels + i / kTileK;
          const int64_t k = kg * kTileK + i % kTileK;
          tile[i] = n < p.n_ && k < p.k_ ? w.values[n * p.k_ + k] : 0;  // zero padding
        }
        lowbit::PackTile(tile, p.bits_, out);
        out += p.tile_bytes();
      }
    }
  }
  return p;
}

int Packed::panel_groups(int64_t p) const {
  return static_cast<int>(std::min<int64_t>(kPanelGroups, groups_ - p * kPanelGroups));
}

const uint8_t* Packed::panel_data(int64_t p) const {
  // Every panel before p is full.
  return bytes_.data() + p * kPanelGroups * (kp_ / kTileK) * tile_bytes();
}

std::vector<int8_t> Packed::Unpack() const {
  std::vector<int8_t> out(static_cast<size_t>(n_ * k_));
  std::vector<int8_t> panel;
  for (int64_t p = 0; p < panels(); ++p) {
    const int groups = panel_groups(p);
    panel.resize(static_cast<size_t>(panel_tiles(p) * kTileValues));
    lowbit::UnpackTilesScalar(panel_data(p), bits_, panel_tiles(p), panel.data());
    for (int64_t i = 0; i < static_cast<int64_t>(panel.size()); ++i) {
      // i = ((kg·groups + g)·16 + c)·4 + j
      const int64_t j = i % kTileK, c = i / kTileK % kGroupChannels;
      const int64_t g = i / kTileValues % groups, kg = i / kTileValues / groups;
      const int64_t n = p * kPanelChannels + g * kGroupChannels + c, k = kg * kTileK + j;
      if (n < n_ && k < k_) out[n * k_ + k] = panel[i];
    }
  }
  return out;
}

// ---- GEMM -----------------------------------------------------------------------------------

absl::StatusOr<LowBitGemm> LowBitGemm::Create(const WeightQuant& w, const ActQuant& act,
                                              std::vector<float> bias) {
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != w.rows) {
    return absl::InvalidArgumentError(
        absl::StrCat(bias.size(), " bias values for ", w.rows, " output channels"));
  }
  if (static_cast<int64_t>(w.scales.size()) != w.rows) {
    return absl::InvalidArgumentError(
        absl::StrCat(w.scales.size(), " weight scales for ", w.rows, " output channels"));
  }
  absl::StatusOr<Packed> packed = Packed::Pack(w);
  if (!packed.ok()) return packed.status();
  LowBitGemm gemm;
  gemm.weights_ = *std::move(packed);
  const size_t padded_n = static_cast<size_t>(gemm.weights_.panels() * Packed::kPanelChannels);
  gemm.zero_correction_.assign(padded_n, 0);
  gemm.scale_.assign(padded_n, 0.0f);
  gemm.bias_.assign(padded_n, 0.0f);
  for (int64_t n = 0; n < w.rows; ++n) {
    int32_t sum = 0;  // |sum| ≤ 7·K: exact
    for (int64_t k = 0; k < w.cols; ++k) sum += w.values[n * w.cols + k];
    gemm.zero_correction_[n] = act.zero_point * sum;
    gemm.scale_[n] = act.scale * w.scales[n];  // the product oneDNN's int8 kernel is given
    if (!bias.empty()) gemm.bias_[n] = bias[n];
  }
  return gemm;
}

size_t LowBitGemm::resident_bytes() const {
  return weights_.size_bytes() + zero_correction_.size() * sizeof(int32_t) +
         (scale_.size() + bias_.size()) * sizeof(float);
}

void LowBitGemm::Run(const uint8_t* codes, int64_t m, float* y, Activation activation,
                     bool accumulate) const {
  RunPanels(codes, m, activation, {.y = y, .accumulate = accumulate});
}

void LowBitGemm::RunToCodes(const uint8_t* codes, int64_t m, Activation activation,
                            const ActQuant& grid, uint8_t* out) const {
  RunPanels(codes, m, activation, {.out_grid = &grid, .out = out});
}

void LowBitGemm::RunPanels(const uint8_t* codes, int64_t m, Activation activation,
                           const Output& output) const {
  if (m <= 0) return;
  const IsaKernels kernels = KernelsFor(ActiveLowBitIsa());
  const int64_t n = this->n(), kp = padded_k(), panels = weights_.panels();
  const int64_t row_blocks = RowBlocks(m, panels, omp_get_max_threads());
  const int64_t block_rows = RoundUp(CeilDiv(m, row_blocks), kRowQuantum);
  const int64_t items = panels * row_blocks;
  const bool parallel = items > 1 && m * n * kp >= kMinParallelMacs;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t p = item / row_blocks, row0 = item % row_blocks * block_rows;
    if (row0 >= m) continue;
    const int64_t tiles = weights_.panel_tiles(p);
    int8_t* panel = ThreadPanelBuffer(static_cast<size_t>(tiles * Packed::kTileValues));
    kernels.unpack(weights_.panel_data(p), weights_.bits(), tiles, panel);
    const int64_t n0 = p * Packed::kPanelChannels;
    const lowbit::PanelTask task{
        .weights = panel,
        .k_groups = kp / Packed::kTileK,
        .groups = weights_.panel_groups(p),
        .width = static_cast<int>(std::min<int64_t>(Packed::kPanelChannels, n - n0)),
        .codes = codes + row0 * kp,
        .codes_stride = kp,
        .rows = std::min(block_rows, m - row0),
        .zero_correction = zero_correction_.data() + n0,
        .scale = scale_.data() + n0,
        .bias = bias_.data() + n0,
        .y = output.y ? output.y + row0 * n + n0 : nullptr,
        .ldy = n,
        .gelu = activation == Activation::kGelu,
        .accumulate = output.accumulate,
        .out_grid = output.out_grid,
        .out_codes = output.out ? output.out + row0 * n + n0 : nullptr,
        .ldc = n,
    };
    kernels.panel(task);
  }
}

namespace lowbit {

void QuantizeRow(const float* row, int width, const ActQuant& grid, uint8_t* out) {
  QuantizeActivationsSerial(row, width, grid, out);  // inside the GEMM's parallel region
}

}  // namespace lowbit

void QuantizeActivationsPadded(const float* x, int64_t m, int64_t k, int64_t padded_k,
                               const ActQuant& q, uint8_t* out) {
  QuantizeActivations(x, m * k, q, out);  // (m, k) at the front of out
  if (padded_k == k) return;
  // Spread the rows to stride padded_k, last row first: row r moves up, onto bytes whose rows
  // have already moved, and never onto an earlier row's source.
  for (int64_t r = m - 1; r >= 0; --r) {
    std::memmove(out + r * padded_k, out + r * k, static_cast<size_t>(k));
    std::memset(out + r * padded_k + k, q.zero_point, static_cast<size_t>(padded_k - k));
  }
}

}  // namespace vitq
