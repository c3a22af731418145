#include "tools/cli_common.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "preprocessing/dataset.h"
#include "preprocessing/image.h"

namespace vitq::cli {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "vitq: error: %s\n", std::string(status.message()).c_str());
  return 1;
}

void ModelFlags::AddTo(CLI::App* app, bool allow_preset) {
  app->add_option("--model,-m", model,
                  allow_preset
                      ? "model: a safetensors file, or an architecture preset for random weights"
                      : "model: a safetensors file (its card FOO.yaml beside it, or --arch)")
      ->required();
  app->add_option("--arch", arch,
                  "architecture preset for a bare checkpoint without model card (" +
                      absl::StrJoin(PresetNames(), ", ") + ")");
  app->add_option(
         "--precision,-p", precision,
         "precision of every float layer: fp32 or bf16 (a quantized artifact's integer layers keep "
         "their bits)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  app->add_flag(
      "--fake-quant", fake_quant,
      "run a quantized artifact's integer layers as the fp32 simulation of their quantizers (the "
      "reference the integer kernels are tested against)");
}

absl::StatusOr<std::unique_ptr<Model>> LoadFromFlags(const ModelFlags& f, bool allow_preset) {
  absl::StatusOr<Precision> precision = ParsePrecision(f.precision);
  if (!precision.ok()) return precision.status();
  const PrecisionPlan plan = UniformPlan(*precision);
  if (allow_preset && !f.model.ends_with(".safetensors")) {
    absl::StatusOr<ModelConfig> config = PresetConfig(f.model);
    if (!config.ok()) return config.status();
    return RandomModel(*config, /*seed=*/1, plan);
  }
  LoadOptions options;
  if (!f.arch.empty()) options.arch = f.arch;
  options.plan = plan;
  options.fake_quant = f.fake_quant;
  return LoadModel(f.model, options);
}

namespace {

// Every image file (JPEG, PNG, BMP, WebP) in `folder`, sorted by name, preprocessed as the model
// expects: real photos for calibration when no labelled data set fits the model.
absl::StatusOr<Tensor> LoadImageFolder(const std::string& folder, const ModelConfig& config) {
  namespace fs = std::filesystem;
  std::error_code error;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(folder, error)) {
    std::string ext = entry.path().extension().string();
    for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (entry.is_regular_file() &&
        (ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp" || ext == ".webp")) {
      files.push_back(entry.path());
    }
  }
  if (error) return absl::NotFoundError(absl::StrCat("folder:", folder, ": ", error.message()));
  std::sort(files.begin(), files.end());
  const int64_t c = config.in_chans, s = config.img_size;
  const preprocessing::PreprocessOptions options = PreprocessOptionsFor(config);
  std::vector<float> images, chw;
  int64_t n = 0;
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    absl::Status st = preprocessing::PreprocessImage(
        {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, options, chw);
    if (!st.ok()) {  // a folder of photos may hold a broken one: say so, use the rest
      std::fprintf(stderr, "vitq: skipping %s: %s\n", file.c_str(),
                   std::string(st.message()).c_str());
      continue;
    }
    images.insert(images.end(), chw.begin(), chw.end());
    ++n;
  }
  if (n == 0)
    return absl::InvalidArgumentError(absl::StrCat("folder:", folder, ": no readable images"));
  Tensor out({n, c, s, s});
  std::copy(images.begin(), images.end(), out.data());
  return out;
}

}  // namespace

absl::StatusOr<Tensor> LoadImages(const std::string& spec, const ModelConfig& config,
                                  uint64_t seed) {
  const int64_t c = config.in_chans, s = config.img_size;
  if (spec.rfind("random:", 0) == 0) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(spec.substr(7), &n) || n <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad image count in '", spec, "'"));
    }
    Tensor images({n, c, s, s});
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& v : images.span()) v = normal(rng);
    return images;
  }
  if (spec.rfind("folder:", 0) == 0) return LoadImageFolder(spec.substr(7), config);
  auto data = data::LoadDataset(spec);
  if (!data.ok()) return data.status();
  const preprocessing::PreprocessOptions options = PreprocessOptionsFor(config);
  Tensor images({data->count, c, s, s});
  std::vector<float> chw;
  for (int64_t i = 0; i < data->count; ++i) {
    absl::Status st =
        preprocessing::PreprocessPixels(data->image(i), data->height, data->width, 1, options, chw);
    if (!st.ok())
      return absl::InvalidArgumentError(absl::StrCat(spec, ": image ", i, ": ", st.message()));
    std::copy(chw.begin(), chw.end(), images.data() + i * c * s * s);
  }
  return images;
}

}  // namespace vitq::cli
