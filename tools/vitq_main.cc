// vitq: command-line front end of the engine. Each subcommand parses flags and calls
// the libraries; run `vitq --help` or `vitq SUBCOMMAND --help`.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "backends/malloc_tuning.h"
#include "backends/model.h"
#include "backends/safetensors.h"
#include "preprocessing/image.h"
#include "tools/cli_common.h"
#include "tools/eval_command.h"
#include "tools/quantize_command.h"

namespace vitq::cli {
namespace {

absl::StatusOr<std::vector<uint8_t>> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

// ---- vitq info ----
int Info(const ModelFlags& f) {
  absl::StatusOr<std::unique_ptr<Model>> model = LoadFromFlags(f, /*allow_preset=*/true);
  if (!model.ok()) return Fail(model.status());
  const ModelConfig& c = (*model)->config();
  std::printf("name: %s\narch: %s\nnaming: %s\nparameters: %lld\n", c.name.c_str(),
              ArchName(c.arch).c_str(), SchemeName((*model)->naming()).c_str(),
              static_cast<long long>((*model)->num_parameters()));
  std::printf("input: [N, %lld, %lld, %lld]\nclasses: %lld\npatch_size: %lld\nembed_dim: %lld\n",
              (long long)c.in_chans, (long long)c.img_size, (long long)c.img_size,
              (long long)c.num_classes, (long long)c.patch_size, (long long)c.embed_dim);
  if (c.arch == Arch::kDeit) {
    std::printf("depth: %lld\nnum_heads: %lld\ndistilled: %s\n", (long long)c.depth,
                (long long)c.num_heads, c.distilled ? "true" : "false");
  } else {
    std::printf("depths: [%s]\nnum_heads: [%s]\nwindow_size: %lld\n",
                absl::StrJoin(c.depths, ", ").c_str(), absl::StrJoin(c.stage_heads, ", ").c_str(),
                (long long)c.window_size);
  }
  for (const auto& [key, value] : c.extra) std::printf("%s: %s\n", key.c_str(), value.c_str());
  if (!f.model.ends_with(".safetensors")) return 0;
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(f.model);
  if (!file.ok()) return Fail(file.status());
  std::printf("tensors:\n");
  for (const std::string& name : (*file)->Names()) {
    const TensorView v = *(*file)->Get(name);
    std::printf("  %-60s %-5s %s\n", name.c_str(), DTypeName(v.dtype).c_str(),
                ShapeToString(v.shape).c_str());
  }
  return 0;
}

// ---- vitq run ----
int Run(const ModelFlags& f, const std::string& input_path, const std::string& output_path) {
  absl::StatusOr<std::unique_ptr<Model>> model = LoadFromFlags(f, /*allow_preset=*/false);
  if (!model.ok()) return Fail(model.status());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> in = SafetensorsFile::Open(input_path);
  if (!in.ok()) return Fail(in.status());
  absl::StatusOr<Tensor> images = (*in)->ReadFloat("input");
  if (!images.ok()) return Fail(images.status());
  absl::StatusOr<Tensor> logits = (*model)->Forward(*images);
  if (!logits.ok()) return Fail(logits.status());
  SafetensorsWriter out;
  out.AddFloat("logits", *logits);
  out.SetMetadata("model", f.model);
  out.SetMetadata("precision", f.precision);
  if (absl::Status s = out.WriteFile(output_path); !s.ok()) return Fail(s);
  std::printf("wrote logits %s to %s\n", ShapeToString(logits->shape()).c_str(),
              output_path.c_str());
  return 0;
}

// ---- vitq bench ----
struct BenchFlags {
  int64_t batch = 8;
  int iters = 10;
  int warmup = 3;
  int threads = 0;
  bool describe = false;
  bool second_thread = false;
};

// Runs `warmup` untimed and `iters` timed forward passes; the milliseconds of the timed ones, or
// the first error.
absl::StatusOr<std::vector<double>> TimeForward(const Model& model, const Tensor& images,
                                                int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) (void)model.Forward(images);
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<Tensor> logits = model.Forward(images);
    auto t1 = std::chrono::steady_clock::now();
    if (!logits.ok()) return logits.status();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return ms;
}

int Bench(const ModelFlags& f, const BenchFlags& b) {
  if (b.threads > 0) omp_set_num_threads(b.threads);
  absl::StatusOr<std::unique_ptr<Model>> model = LoadFromFlags(f, /*allow_preset=*/true);
  if (!model.ok()) return Fail(model.status());
  const ModelConfig& c = (*model)->config();
  Tensor images({b.batch, c.in_chans, c.img_size, c.img_size});
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  for (float& v : images.span()) v = uniform(rng);
  if (b.describe) {
    for (const auto& row : (*model)->DescribeKernels(b.batch))
      std::printf("kernel %-40s %-9s %s\n", row[0].c_str(), row[1].c_str(), row[2].c_str());
  }
  // The label is the precision most layers run at ("w8a8" for an artifact, else --precision).
  const std::string label = PrecisionSummary(**model);
  absl::StatusOr<std::vector<double>> timed;
  if (b.second_thread) {
    // As the server's batchers did before its engine thread: this thread already has an OpenMP
    // pool (PrecisionSummary described the kernels), so the passes run on a second pool
    // (docs/PERFORMANCE.md, serving).
    std::thread runner([&] {
      if (b.threads > 0) omp_set_num_threads(b.threads);  // a per-thread setting
      timed = TimeForward(**model, images, b.warmup, b.iters);
    });
    runner.join();
  } else {
    timed = TimeForward(**model, images, b.warmup, b.iters);
  }
  if (!timed.ok()) return Fail(timed.status());
  std::vector<double>& ms = *timed;
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  std::printf(
      "engine=vitq model=%s prec=%s bs=%lld threads=%d ms_per_batch=%.2f img_per_s=%.2f "
      "min_ms=%.2f max_ms=%.2f\n",
      c.name.c_str(), label.c_str(), (long long)b.batch, omp_get_max_threads(), median,
      1000.0 * b.batch / median, ms.front(), ms.back());
  return 0;
}

// ---- vitq classify ----
int Classify(const ModelFlags& f, std::string labels_path, int topk,
             const std::vector<std::string>& images) {
  absl::StatusOr<std::unique_ptr<Model>> model = LoadFromFlags(f, /*allow_preset=*/false);
  if (!model.ok()) return Fail(model.status());
  const ModelConfig& c = (*model)->config();
  absl::StatusOr<std::vector<std::string>> names = ClassNamesFor(c, labels_path);
  if (!names.ok()) return Fail(names.status());
  const std::vector<std::string> labels = std::move(*names);
  const preprocessing::PreprocessOptions opt = PreprocessOptionsFor(c);
  int failures = 0;
  for (const std::string& path : images) {
    std::vector<float> chw;
    absl::StatusOr<std::vector<uint8_t>> bytes = ReadFile(path);
    absl::Status s = bytes.ok() ? preprocessing::PreprocessImage(*bytes, opt, chw) : bytes.status();
    if (!s.ok()) {
      std::fprintf(stderr, "vitq: %s: %s\n", path.c_str(), std::string(s.message()).c_str());
      ++failures;
      continue;
    }
    Tensor input({1, c.in_chans, c.img_size, c.img_size});
    std::copy(chw.begin(), chw.end(), input.data());
    absl::StatusOr<Tensor> logits = (*model)->Forward(input);
    if (!logits.ok()) return Fail(logits.status());
    // Softmax over classes, then the top k.
    std::vector<float> p(logits->data(), logits->data() + c.num_classes);
    const float max_logit = *std::max_element(p.begin(), p.end());
    float sum = 0.0f;
    for (float& v : p) sum += (v = std::exp(v - max_logit));
    std::vector<int> order(p.size());
    std::iota(order.begin(), order.end(), 0);
    const int k = std::min<int>(topk, static_cast<int>(order.size()));
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int a, int b) { return p[a] > p[b]; });
    std::printf("%s\n", path.c_str());
    for (int i = 0; i < k; ++i) {
      const int cls = order[i];
      const std::string name =
          cls < static_cast<int>(labels.size()) ? labels[cls] : std::to_string(cls);
      std::printf("  %d. %-24s %.4f\n", i + 1, name.c_str(), p[cls] / sum);
    }
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace vitq::cli

int main(int argc, char** argv) {
  using namespace vitq::cli;
  vitq::KeepFreedBuffersForReuse();
  CLI::App app{
      "vitq: quantized vision transformers (DeiT, Swin) on CPUs.\n"
      "MODEL is a safetensors checkpoint; its architecture comes from the model card beside it\n"
      "(foo.safetensors -> foo.yaml) or from --arch PRESET. timm and torchvision tensor names\n"
      "are both accepted."};
  app.require_subcommand(1);
  app.option_defaults()->always_capture_default();  // every subcommand's --help shows defaults

  ModelFlags info_flags;
  CLI::App* info =
      app.add_subcommand("info", "Print a model's architecture, parameter count and tensors");
  info_flags.AddTo(info, /*allow_preset=*/true);

  ModelFlags run_flags;
  std::string input_path, output_path;
  CLI::App* run = app.add_subcommand(
      "run", "Run a batch: tensor 'input' [N,C,H,W] f32 -> tensor 'logits' [N,classes]");
  run_flags.AddTo(run, /*allow_preset=*/false);
  run->add_option("--input,-i", input_path, "safetensors file holding tensor 'input'")
      ->required()
      ->check(CLI::ExistingFile);
  run->add_option("--output,-o", output_path, "safetensors file to write tensor 'logits' to")
      ->required();

  ModelFlags bench_flags;
  BenchFlags bench_opts;
  CLI::App* bench = app.add_subcommand(
      "bench", "Time Forward on a random batch; prints ms_per_batch= and img_per_s=");
  bench_flags.AddTo(bench, /*allow_preset=*/true);
  bench->add_option("--batch,-b", bench_opts.batch, "images per batch")->check(CLI::Range(1, 4096));
  bench->add_option("--iters,-n", bench_opts.iters, "timed runs (the median is reported)")
      ->check(CLI::Range(1, 100000));
  bench->add_option("--warmup", bench_opts.warmup,
                    "untimed runs first (primitive creation, caches)");
  bench->add_option("--threads,-t", bench_opts.threads,
                    "OpenMP threads (default: OMP_NUM_THREADS or all cores)");
  bench->add_flag("--describe", bench_opts.describe,
                  "print the kernel oneDNN picked for every layer");
  bench->add_flag("--second-thread", bench_opts.second_thread,
                  "time the passes on a second thread, which gets its own OpenMP pool (shows "
                  "libgomp's cost of several pools; the server runs all passes on one thread)");

  ModelFlags classify_flags;
  std::string labels_path;
  int topk = 5;
  std::vector<std::string> image_paths;
  CLI::App* classify = app.add_subcommand(
      "classify", "Classify image files (JPEG, PNG, BMP, WebP); prints top-k classes");
  classify_flags.AddTo(classify, /*allow_preset=*/false);
  classify->add_option("--labels,-l", labels_path,
                       "class names, one per line (default: the card's labels)");
  classify->add_option("--topk,--top-k,-k", topk, "classes to print per image")
      ->check(CLI::Range(1, 100000));
  classify->add_option("images", image_paths, "image files")->required();

  EvalFlags eval_flags;
  CLI::App* eval = AddEvalCommand(app, eval_flags);

  QuantizeFlags quantize_flags;
  CLI::App* quantize = AddQuantizeCommand(app, quantize_flags);

  CLI11_PARSE(app, argc, argv);
  if (*info) return Info(info_flags);
  if (*run) return Run(run_flags, input_path, output_path);
  if (*bench) return Bench(bench_flags, bench_opts);
  if (*classify) return Classify(classify_flags, labels_path, topk, image_paths);
  if (*eval) return RunEval(eval_flags);
  if (*quantize) return RunQuantize(quantize_flags);
  return 1;
}
