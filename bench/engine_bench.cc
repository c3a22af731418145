// Engine benchmarks: whole models (DeiT-S, Swin-T at 224, batch 1 and 8, fp32 and bf16,
// random weights) and the non-GEMM kernels that sit between the GEMMs.
//
// items_per_second of the Model/* benchmarks is images per second.
//
// IntLinear/*: the integer linear kernels at DeiT-S shapes, batch 8 (M = 8·197 = 1576 rows);
// args are (N, K): (1152, 384) qkv, (384, 384) proj, (1536, 384) fc1, (384, 1536) fc2.
// W8A8 runs on oneDNN, W4/W3/W2 on LowBitGemm with the ISA path forced; GOP/s counts 2·M·N·K
// per call (input quantization included, as in the model). Compare the low-bit rows with the
// oneDNN row of the same shape in one run (this machine's timings drift between hours):
//   build/release/bench/engine_bench --benchmark_filter='IntLinear/' --benchmark_repetitions=3
#include <benchmark/benchmark.h>

#include <optional>
#include <random>
#include <vector>

#include "backends/attention.h"
#include "backends/lowbit_gemm.h"
#include "backends/model.h"
#include "backends/ops.h"
#include "backends/quantize.h"

namespace vitq {
namespace {

void FillRandom(float* x, int64_t n, float scale = 1.0f) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, scale);
  for (int64_t i = 0; i < n; ++i) x[i] = normal(rng);
}

void BM_Model(benchmark::State& state, const std::string& preset, Precision precision) {
  const int64_t batch = state.range(0);
  auto config = PresetConfig(preset);
  auto model = RandomModel(*config, 1, UniformPlan(precision));
  if (!model.ok()) {
    state.SkipWithError(std::string(model.status().message()).c_str());
    return;
  }
  Tensor images({batch, config->in_chans, config->img_size, config->img_size});
  FillRandom(images.data(), images.numel());
  (void)(*model)->Forward(images);  // creates primitives
  for (auto _ : state) benchmark::DoNotOptimize((*model)->Forward(images));
  state.SetItemsProcessed(state.iterations() * batch);
}

BENCHMARK_CAPTURE(BM_Model, deit_small_fp32, "deit_small", Precision::kFp32)
    ->Arg(1)
    ->Arg(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_Model, deit_small_bf16, "deit_small", Precision::kBf16)
    ->Arg(1)
    ->Arg(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_Model, swin_tiny_fp32, "swin_tiny", Precision::kFp32)
    ->Arg(1)
    ->Arg(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_Model, swin_tiny_bf16, "swin_tiny", Precision::kBf16)
    ->Arg(1)
    ->Arg(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// DeiT-S at batch 8: 1576 rows of 384.
void BM_LayerNorm(benchmark::State& state) {
  const int64_t rows = 1576, cols = 384;
  std::vector<float> x(rows * cols), y(rows * cols), g(cols, 1.0f), b(cols, 0.0f);
  FillRandom(x.data(), x.size());
  for (auto _ : state) LayerNormRows(x.data(), y.data(), rows, cols, g.data(), b.data(), 1e-6f);
  state.SetBytesProcessed(state.iterations() * rows * cols * 8);
}
BENCHMARK(BM_LayerNorm)->UseRealTime();

// LayerNorm feeding an integer Linear, DeiT-S rows at batch 1 and 8 (arg): the float output
// quantized in a second pass (BM_LayerNormThenQuantize, before 2026-12-06) against the codes
// written from each normalised row while it is in cache (BM_LayerNormToCodes, what the models run).
void LayerNormIntoCodes(benchmark::State& state, bool fused) {
  const int64_t rows = state.range(0), cols = 384;
  std::vector<float> x(rows * cols), y(rows * cols), g(cols, 1.0f), b(cols, 0.0f);
  std::vector<uint8_t> codes(rows * cols);
  FillRandom(x.data(), x.size());
  const ActQuant grid = ActQuantFromRange(-3.0f, 3.0f, 8);
  for (auto _ : state) {
    if (fused) {
      LayerNormRowsToCodes(x.data(), codes.data(), rows, cols, g.data(), b.data(), 1e-6f, grid);
    } else {
      LayerNormRows(x.data(), y.data(), rows, cols, g.data(), b.data(), 1e-6f);
      QuantizeActivations(y.data(), rows * cols, grid, codes.data());
    }
  }
  state.SetItemsProcessed(state.iterations() * rows * cols);
}
void BM_LayerNormThenQuantize(benchmark::State& state) { LayerNormIntoCodes(state, false); }
void BM_LayerNormToCodes(benchmark::State& state) { LayerNormIntoCodes(state, true); }
BENCHMARK(BM_LayerNormThenQuantize)->Arg(197)->Arg(1576)->UseRealTime();
BENCHMARK(BM_LayerNormToCodes)->Arg(197)->Arg(1576)->UseRealTime();

// DeiT-S attention scores: batch × 6 heads × 197 rows of 197 (arg: batch).
void BM_Softmax(benchmark::State& state) {
  const int64_t rows = state.range(0) * 6 * 197, cols = 197;
  std::vector<float> x(rows * cols);
  FillRandom(x.data(), x.size());
  for (auto _ : state) SoftmaxRows(x.data(), rows, cols);
  state.SetItemsProcessed(state.iterations() * rows * cols);
}
BENCHMARK(BM_Softmax)->Arg(1)->Arg(8)->UseRealTime();

void BM_Gelu(benchmark::State& state) {
  const int64_t n = 1576 * 1536;
  std::vector<float> x(n);
  FillRandom(x.data(), n);
  for (auto _ : state) GeluErf(x.data(), n);
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_Gelu)->UseRealTime();

// One DeiT-S attention (batch 8) without the qkv / proj GEMMs.
void BM_AttentionCore(benchmark::State& state) {
  const Precision p = state.range(0) ? Precision::kBf16 : Precision::kFp32;
  AttentionCore attn(6, 64, QuantSpec::Float(p));
  const int64_t groups = 8, tokens = 197;
  std::vector<float> qkv(groups * tokens * 3 * 384), out(groups * tokens * 384);
  FillRandom(qkv.data(), qkv.size());
  for (auto _ : state) attn.Forward(qkv.data(), groups, tokens, nullptr, 0, out.data());
}
BENCHMARK(BM_AttentionCore)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_IntLinear(benchmark::State& state, int weight_bits, std::optional<LowBitIsa> isa) {
  const int64_t m = 8 * 197, n = state.range(0), k = state.range(1);
  if (isa && !LowBitIsaAvailable(*isa)) {
    state.SkipWithError("ISA path not supported by this CPU");
    return;
  }
  Tensor w({n, k}), b({n});
  FillRandom(w.data(), w.numel(), 0.05f);
  FillRandom(b.data(), b.numel());
  QuantSpec spec;
  spec.precision = Precision::kInt8;
  spec.weight_bits = weight_bits;
  spec.act = ActQuantFromRange(-4.0f, 6.0f, 8);
  auto layer = Linear::Create("l", LinearParams{std::move(w), std::move(b)}, spec);
  if (!layer.ok()) {
    state.SkipWithError(std::string(layer.status().message()).c_str());
    return;
  }
  (void)SetLowBitIsaOverride(isa);
  std::vector<float> x(m * k), y(m * n);
  FillRandom(x.data(), x.size());
  layer->Forward(x.data(), m, y.data());  // creates oneDNN primitives, sizes the buffers
  for (auto _ : state) {
    layer->Forward(x.data(), m, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(layer->Describe(m));
  state.counters["GOP/s"] = benchmark::Counter(2e-9 * static_cast<double>(m * n * k),
                                               benchmark::Counter::kIsIterationInvariantRate);
  (void)SetLowBitIsaOverride(std::nullopt);
}

void DeitShapes(benchmark::internal::Benchmark* b) {
  b->Args({1152, 384})->Args({384, 384})->Args({1536, 384})->Args({384, 1536});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_IntLinear, w8a8_onednn, 8, std::nullopt)->Apply(DeitShapes);
BENCHMARK_CAPTURE(BM_IntLinear, w4a8_avx512_vnni, 4, LowBitIsa::kAvx512Vnni)->Apply(DeitShapes);
BENCHMARK_CAPTURE(BM_IntLinear, w3a8_avx512_vnni, 3, LowBitIsa::kAvx512Vnni)->Apply(DeitShapes);
BENCHMARK_CAPTURE(BM_IntLinear, w2a8_avx512_vnni, 2, LowBitIsa::kAvx512Vnni)->Apply(DeitShapes);
BENCHMARK_CAPTURE(BM_IntLinear, w4a8_avx2, 4, LowBitIsa::kAvx2)->Apply(DeitShapes);
BENCHMARK_CAPTURE(BM_IntLinear, w3a8_avx2, 3, LowBitIsa::kAvx2)->Apply(DeitShapes);
BENCHMARK_CAPTURE(BM_IntLinear, w2a8_avx2, 2, LowBitIsa::kAvx2)->Apply(DeitShapes);
// The scalar reference is only a correctness oracle; one bit width shows its cost.
BENCHMARK_CAPTURE(BM_IntLinear, w4a8_scalar, 4, LowBitIsa::kScalar)->Apply(DeitShapes);

}  // namespace
}  // namespace vitq

BENCHMARK_MAIN();
