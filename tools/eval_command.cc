#include "tools/eval_command.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <span>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "backends/model.h"
#include "backends/safetensors.h"
#include "backends/tensor.h"
#include "preprocessing/dataset.h"
#include "preprocessing/image.h"

namespace vitq::cli {
namespace {

constexpr int64_t kTopK = 5;

// What one pass over a dataset measured.
struct EvalResult {
  int64_t images = 0;
  int64_t top1_correct = 0;
  int64_t top5_correct = 0;
  double seconds = 0;  // preprocessing + forward, wall time
  // Confusion counts (classes, columns): rows are the dataset's classes; columns the same plus
  // one "other" column when the model has classes the dataset lacks.
  int64_t classes = 0;
  int64_t columns = 0;
  std::vector<int64_t> confusion;
  Tensor logits;  // (images, model classes), kept for --logits-out only

  int64_t& cell(int64_t truth, int64_t column) { return confusion[truth * columns + column]; }
  int64_t cell(int64_t truth, int64_t column) const { return confusion[truth * columns + column]; }
  // Predictions beyond the dataset's classes share the last ("other") column.
  int64_t ColumnOf(int64_t predicted) const { return std::min(predicted, columns - 1); }
};

// --limit on top of the spec's own count: keeps the first `limit` images.
void KeepPrefix(int64_t limit, data::LabeledImages& data) {
  if (limit <= 0 || limit >= data.count) return;
  data.count = limit;
  data.pixels.resize(static_cast<size_t>(limit * data.height * data.width));
  data.labels.resize(static_cast<size_t>(limit));
}

// Errors a user can fix, found before any image runs.
absl::Status CheckCompatible(const ModelConfig& config, const data::LabeledImages& data,
                             const preprocessing::PreprocessOptions& options) {
  if (config.num_classes < data.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the model has ", config.num_classes, " classes but dataset '", data.source,
        "' has labels up to ", data.num_classes - 1, " (", data.num_classes, " classes)"));
  }
  if (absl::Status s = preprocessing::ValidateOptions(options); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot turn the dataset's ", data.height, "x",
                                                   data.width, " gray images into this model's ",
                                                   "input: ", s.message()));
  }
  return absl::OkStatus();
}

// Images [begin, begin + batch.dim(0)) of `data` through the card's transform into
// `batch` (B, C, S, S).
absl::Status PreprocessBatch(const data::LabeledImages& data, int64_t begin,
                             const preprocessing::PreprocessOptions& options, Tensor& batch) {
  const int64_t per_image = batch.numel() / batch.dim(0);
  std::vector<float> chw;
  for (int64_t i = 0; i < batch.dim(0); ++i) {
    absl::Status s = preprocessing::PreprocessPixels(data.image(begin + i), data.height, data.width,
                                                     /*channels=*/1, options, chw);
    if (!s.ok())
      return absl::InvalidArgumentError(absl::StrCat("image ", begin + i, ": ", s.message()));
    std::copy(chw.begin(), chw.end(), batch.data() + i * per_image);
  }
  return absl::OkStatus();
}

// How many classes are ranked before `label`: those with a higher logit, or an equal one and a
// lower index (so rank 0 is exactly the argmax that picks the first maximum).
int64_t RankOf(std::span<const float> logits, int64_t label) {
  const float target = logits[label];
  if (!std::isfinite(target)) return static_cast<int64_t>(logits.size());
  int64_t rank = 0;
  for (int64_t j = 0; j < static_cast<int64_t>(logits.size()); ++j) {
    rank += logits[j] > target || (logits[j] == target && j < label);
  }
  return rank;
}

// Adds a batch of logits (B, model classes) and its labels to `result`.
void Score(const Tensor& logits, const uint8_t* labels, EvalResult& result) {
  const int64_t classes = logits.dim(1);
  for (int64_t i = 0; i < logits.dim(0); ++i) {
    const std::span<const float> row(logits.data() + i * classes, static_cast<size_t>(classes));
    const int64_t predicted = std::max_element(row.begin(), row.end()) - row.begin();
    const int64_t rank = RankOf(row, labels[i]);
    result.top1_correct += rank == 0;
    result.top5_correct += rank < kTopK;
    ++result.cell(labels[i], result.ColumnOf(predicted));
  }
  result.images += logits.dim(0);
}

absl::StatusOr<EvalResult> Evaluate(const Model& model, const data::LabeledImages& data,
                                    const preprocessing::PreprocessOptions& options,
                                    int64_t batch_size, bool keep_logits) {
  const ModelConfig& config = model.config();
  EvalResult result;
  result.classes = data.num_classes;
  result.columns = data.num_classes + (config.num_classes > data.num_classes ? 1 : 0);
  result.confusion.assign(static_cast<size_t>(result.classes * result.columns), 0);
  if (keep_logits) result.logits = Tensor({data.count, config.num_classes});
  for (int64_t begin = 0; begin < data.count; begin += batch_size) {
    const int64_t n = std::min(batch_size, data.count - begin);
    const auto start = std::chrono::steady_clock::now();
    Tensor batch({n, config.in_chans, config.img_size, config.img_size});
    if (absl::Status s = PreprocessBatch(data, begin, options, batch); !s.ok()) return s;
    absl::StatusOr<Tensor> logits = model.Forward(batch);
    if (!logits.ok()) return logits.status();
    result.seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    Score(*logits, data.labels.data() + begin, result);
    if (keep_logits) {
      std::copy(logits->span().begin(), logits->span().end(),
                result.logits.data() + begin * config.num_classes);
    }
  }
  return result;
}

// Names of the dataset's classes: from the label file where it has them, else indices.
std::vector<std::string> ClassNames(const std::vector<std::string>& file_names, int64_t classes) {
  std::vector<std::string> names;
  for (int64_t i = 0; i < classes; ++i) {
    const bool named = i < static_cast<int64_t>(file_names.size()) && !file_names[i].empty();
    names.push_back(named ? file_names[i] : std::to_string(i));
  }
  return names;
}

void PrintConfusion(const EvalResult& result, const std::vector<std::string>& names) {
  std::vector<std::string> headers = names;
  if (result.columns > result.classes) headers.push_back("other");
  // Every column as wide as its header or its largest count.
  std::vector<int> widths;
  for (int64_t p = 0; p < result.columns; ++p) {
    int64_t largest = 0;
    for (int64_t t = 0; t < result.classes; ++t) largest = std::max(largest, result.cell(t, p));
    widths.push_back(std::max<int>(headers[p].size(), std::to_string(largest).size()));
  }
  const std::string corner = "true\\pred";
  int label_width = corner.size();
  for (const std::string& name : names) label_width = std::max<int>(label_width, name.size());

  std::printf("confusion matrix (rows: true class, columns: predicted class)\n");
  std::printf("%-*s", label_width, corner.c_str());
  for (int64_t p = 0; p < result.columns; ++p) {
    std::printf("  %*s", widths[p], headers[p].c_str());
  }
  std::printf("\n");
  for (int64_t t = 0; t < result.classes; ++t) {
    std::printf("%-*s", label_width, names[t].c_str());
    for (int64_t p = 0; p < result.columns; ++p) {
      std::printf("  %*lld", widths[p], static_cast<long long>(result.cell(t, p)));
    }
    std::printf("\n");
  }
}

void PrintPerClassAccuracy(const EvalResult& result, const std::vector<std::string>& names) {
  int label_width = 0;
  for (const std::string& name : names) label_width = std::max<int>(label_width, name.size());
  std::printf("per-class accuracy\n");
  for (int64_t t = 0; t < result.classes; ++t) {
    int64_t total = 0;
    for (int64_t p = 0; p < result.columns; ++p) total += result.cell(t, p);
    const std::string accuracy =
        total > 0 ? absl::StrFormat("%.4f", static_cast<double>(result.cell(t, t)) / total)
                  : std::string("n/a");
    std::printf("%-*s  %-6s  (%lld/%lld)\n", label_width, names[t].c_str(), accuracy.c_str(),
                static_cast<long long>(result.cell(t, t)), static_cast<long long>(total));
  }
}

void PrintReport(const EvalFlags& flags, const EvalResult& result,
                 const std::vector<std::string>& names) {
  const double n = static_cast<double>(result.images);
  std::printf("model=%s precision=%s dataset=%s\n", flags.model.model.c_str(),
              flags.model.precision.c_str(), flags.dataset.c_str());
  std::printf("top1=%.4f\ntop5=%.4f\nimages=%lld\nimg_per_s=%.1f\n", result.top1_correct / n,
              result.top5_correct / n, static_cast<long long>(result.images),
              result.seconds > 0 ? n / result.seconds : 0.0);
  PrintConfusion(result, names);
  PrintPerClassAccuracy(result, names);
}

absl::Status WriteLogits(const EvalFlags& flags, const EvalResult& result,
                         const data::LabeledImages& data) {
  SafetensorsWriter out;
  out.AddFloat("logits", result.logits);
  out.Add("labels", DType::kU8, {data.count},
          std::span<const uint8_t>(data.labels.data(), data.labels.size()));
  out.SetMetadata("model", flags.model.model);
  out.SetMetadata("precision", flags.model.precision);
  out.SetMetadata("dataset", data.source);
  out.SetMetadata("top1", absl::StrFormat("%.6f", static_cast<double>(result.top1_correct) /
                                                      static_cast<double>(result.images)));
  return out.WriteFile(flags.logits_out);
}

}  // namespace

CLI::App* AddEvalCommand(CLI::App& app, EvalFlags& flags) {
  CLI::App* eval = app.add_subcommand(
      "eval", "Accuracy on a labeled dataset: top1=, top5=, img_per_s=, confusion matrix");
  flags.model.AddTo(eval, /*allow_preset=*/false);
  eval->add_option("--dataset,-d", flags.dataset,
                   "fashion-mnist:train[:N], fashion-mnist:test[:N] or idx:IMAGES,LABELS[:N]")
      ->required();
  eval->add_option("--limit,-n", flags.limit, "evaluate only the first N images (0 = all)")
      ->check(CLI::NonNegativeNumber);
  eval->add_option("--batch,-b", flags.batch, "images per forward pass")
      ->check(CLI::Range(1, 4096));
  eval->add_option("--labels,-l", flags.labels_path,
                   "class names, one per line (default: the card's labels)");
  eval->add_option("--logits-out", flags.logits_out,
                   "write tensors 'logits' [N,classes] f32 and 'labels' [N] u8 to this "
                   "safetensors file");
  return eval;
}

int RunEval(const EvalFlags& flags) {
  // The dataset first: a mistyped spec fails before a large model loads.
  absl::StatusOr<data::LabeledImages> data = data::LoadDataset(flags.dataset);
  if (!data.ok()) return Fail(data.status());
  KeepPrefix(flags.limit, *data);
  absl::StatusOr<std::unique_ptr<Model>> model = LoadFromFlags(flags.model, /*allow_preset=*/false);
  if (!model.ok()) return Fail(model.status());
  const ModelConfig& config = (*model)->config();
  const preprocessing::PreprocessOptions options = PreprocessOptionsFor(config);
  if (absl::Status s = CheckCompatible(config, *data, options); !s.ok()) return Fail(s);

  absl::StatusOr<std::vector<std::string>> names = ClassNamesFor(config, flags.labels_path);
  if (!names.ok()) return Fail(names.status());
  const std::vector<std::string> file_names = std::move(*names);

  absl::StatusOr<EvalResult> result =
      Evaluate(**model, *data, options, flags.batch, !flags.logits_out.empty());
  if (!result.ok()) return Fail(result.status());
  PrintReport(flags, *result, ClassNames(file_names, result->classes));
  if (!flags.logits_out.empty()) {
    if (absl::Status s = WriteLogits(flags, *result, *data); !s.ok()) return Fail(s);
  }
  return 0;
}

}  // namespace vitq::cli
