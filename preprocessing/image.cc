#include "preprocessing/image.h"

#include <array>
#include <cmath>
#include <limits>
#include <opencv2/core/mat.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "preprocessing/decode.h"
#include "preprocessing/geometry.h"
#include "preprocessing/resample.h"

namespace vitq::preprocessing {
namespace {

constexpr int64_t kMaxImageSize = 4096;
// Bounds floor(image_size / crop_pct); larger would only blur a tiny crop.
constexpr int64_t kMaxResizedShorterSide = int64_t{1} << 16;
constexpr int64_t kMaxThreads = 1024;

absl::Status InvalidOption(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("invalid preprocessing options: ", what));
}

absl::Status ValidateNormalization(const PreprocessOptions& options) {
  const auto channels = static_cast<size_t>(options.channels);
  if (options.mean.size() != channels || options.std.size() != channels) {
    return InvalidOption(absl::StrCat("mean and std need ", channels,
                                      " values (one per channel), got ", options.mean.size(),
                                      " and ", options.std.size()));
  }
  for (size_t c = 0; c < channels; ++c) {
    if (!std::isfinite(options.mean[c])) return InvalidOption("mean must be finite");
    if (!(options.std[c] > 0) || !std::isfinite(options.std[c])) {
      return InvalidOption(absl::StrCat("std must be positive and finite, got ", options.std[c]));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateLimits(const PreprocessOptions& options) {
  if (options.max_pixels < 1) return InvalidOption("max_pixels must be at least 1");
  if (options.max_bytes < 1 || options.max_bytes > std::numeric_limits<int32_t>::max()) {
    return InvalidOption("max_bytes must be in [1, 2^31 - 1]");
  }
  if (options.num_threads < 0 || options.num_threads > kMaxThreads) {
    return InvalidOption(
        absl::StrCat("num_threads must be in [0, ", kMaxThreads, "], got ", options.num_threads));
  }
  return absl::OkStatus();
}

// Pixels as the resampler reads them, and which of their channels feeds each
// output plane (gray feeds all three; BGR feeds them reversed).
struct ModelPixels {
  PixelView view;
  std::array<int, 3> plane_channel = {0, 0, 0};
  std::vector<uint8_t> storage;  // set when a conversion made new pixels
};

// Interleaved, contiguous 8-bit pixels before conversion.
struct SourcePixels {
  const uint8_t* data = nullptr;
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;  // 1 gray, 2 gray + alpha, 3 color, 4 color + alpha
  bool bgr = false;      // color channels in OpenCV's order
};

// PIL's convert('L'): ITU-R 601-2 luma, L = R 299/1000 + G 587/1000 + B 114/1000,
// in the 16-bit fixed point with rounding that Pillow 9 uses (rgb2l).
std::vector<uint8_t> Luma(const SourcePixels& src) {
  const int64_t pixels = src.height * src.width;
  const int64_t stride = src.channels;
  const int r = src.bgr ? 2 : 0;
  const int b = 2 - r;
  std::vector<uint8_t> gray(pixels);
  for (int64_t i = 0; i < pixels; ++i) {
    const uint8_t* p = src.data + i * stride;
    gray[i] = static_cast<uint8_t>((p[r] * 19595 + p[1] * 38470 + p[b] * 7471 + 0x8000) >> 16);
  }
  return gray;
}

// The first `keep` channels of every pixel: drops alpha, as PIL's convert does.
std::vector<uint8_t> LeadingChannels(const SourcePixels& src, int64_t keep) {
  const int64_t pixels = src.height * src.width;
  std::vector<uint8_t> out(pixels * keep);
  for (int64_t i = 0; i < pixels; ++i) {
    for (int64_t c = 0; c < keep; ++c) out[i * keep + c] = src.data[i * src.channels + c];
  }
  return out;
}

ModelPixels ForModel(const SourcePixels& src, int64_t model_channels) {
  ModelPixels px;
  const bool color = src.channels >= 3;
  const bool alpha = src.channels == 2 || src.channels == 4;
  int64_t channels = color ? 3 : 1;
  if (color && model_channels == 1) {
    px.storage = Luma(src);
    channels = 1;
  } else if (alpha) {
    px.storage = LeadingChannels(src, channels);
  }
  if (channels == 3) px.plane_channel = src.bgr ? std::array{2, 1, 0} : std::array{0, 1, 2};
  const uint8_t* data = px.storage.empty() ? src.data : px.storage.data();
  px.view = PixelView{data, src.height, src.width, channels, src.width * channels};
  return px;
}

// (v / 255 - mean) / std for v in 0..255 with the float32 operations of
// ToTensor (div(255)) and Normalize (sub_, div_): same bits as torchvision.
std::array<float, 256> NormalizationTable(float mean, float std) {
  std::array<float, 256> table;
  for (int v = 0; v < 256; ++v) table[v] = (static_cast<float>(v) / 255.0f - mean) / std;
  return table;
}

// (H, W, C) uint8 -> (planes, H, W) float through per-plane lookup tables.
void WritePlanes(const std::vector<uint8_t>& hwc, const ModelPixels& px,
                 const PreprocessOptions& options, std::vector<float>& out) {
  const int64_t channels = px.view.channels;
  const int64_t pixels = options.image_size * options.image_size;
  out.resize(options.channels * pixels);
  for (int64_t plane = 0; plane < options.channels; ++plane) {
    const std::array<float, 256> table =
        NormalizationTable(options.mean[plane], options.std[plane]);
    const uint8_t* in = hwc.data() + px.plane_channel[plane];
    float* dst = out.data() + plane * pixels;
    for (int64_t i = 0; i < pixels; ++i) dst[i] = table[in[i * channels]];
  }
}

void Preprocess(const SourcePixels& src, const PreprocessOptions& options,
                std::vector<float>& out) {
  const ModelPixels px = ForModel(src, options.channels);
  const int64_t shorter = ResizedShorterSide(options.image_size, options.crop_pct);
  const ImageSize resized = ResizedSize({src.height, src.width}, shorter);
  // crop_pct <= 1 keeps the resized image at least image_size on both sides.
  const Window window = CenterCropWindow(resized, options.image_size);
  const ResampleFilter filter =
      options.interpolation == "bilinear" ? ResampleFilter::kBilinear : ResampleFilter::kBicubic;
  const std::vector<uint8_t> cropped =
      ResizeWindow(px.view, resized.height, resized.width, window, filter,
                   static_cast<int>(options.num_threads));  // (image_size, image_size, C)
  WritePlanes(cropped, px, options, out);
}

}  // namespace

absl::Status ValidateOptions(const PreprocessOptions& options) {
  if (options.image_size < 1 || options.image_size > kMaxImageSize) {
    return InvalidOption(
        absl::StrCat("image_size must be in [1, ", kMaxImageSize, "], got ", options.image_size));
  }
  if (options.channels != 1 && options.channels != 3) {
    return InvalidOption(absl::StrCat("channels must be 1 or 3, got ", options.channels));
  }
  if (!(options.crop_pct > 0.0f && options.crop_pct <= 1.0f)) {
    return InvalidOption(absl::StrCat("crop_pct must be in (0, 1], got ", options.crop_pct));
  }
  if (options.image_size / static_cast<double>(options.crop_pct) > kMaxResizedShorterSide) {
    return InvalidOption(absl::StrCat("crop_pct ", options.crop_pct, " is too small: image_size / ",
                                      "crop_pct must be at most ", kMaxResizedShorterSide));
  }
  if (options.interpolation != "bicubic" && options.interpolation != "bilinear") {
    return InvalidOption(absl::StrCat("interpolation must be \"bicubic\" or \"bilinear\", got \"",
                                      options.interpolation, "\""));
  }
  if (absl::Status status = ValidateNormalization(options); !status.ok()) return status;
  return ValidateLimits(options);
}

absl::Status PreprocessImage(std::span<const uint8_t> encoded, const PreprocessOptions& options,
                             std::vector<float>& out) {
  if (absl::Status status = ValidateOptions(options); !status.ok()) return status;
  absl::StatusOr<cv::Mat> image = DecodeImage(
      encoded, DecodeLimits{.max_pixels = options.max_pixels, .max_bytes = options.max_bytes});
  if (!image.ok()) return image.status();
  const SourcePixels src{.data = image->ptr<uint8_t>(),
                         .height = image->rows,
                         .width = image->cols,
                         .channels = image->channels(),
                         .bgr = true};
  Preprocess(src, options, out);
  return absl::OkStatus();
}

absl::Status PreprocessPixels(const uint8_t* pixels, int64_t height, int64_t width,
                              int64_t channels, const PreprocessOptions& options,
                              std::vector<float>& out) {
  if (absl::Status status = ValidateOptions(options); !status.ok()) return status;
  if (pixels == nullptr) return absl::InvalidArgumentError("pixels is null");
  if (height < 1 || width < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("image size must be positive, got ", height, "x", width));
  }
  if (channels != 1 && channels != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("pixels must have 1 (gray) or 3 (RGB) channels, got ", channels));
  }
  if (height > options.max_pixels / width) {  // height * width > max_pixels, without overflow
    return absl::InvalidArgumentError(absl::StrCat("image is ", width, "x", height,
                                                   ", above the limit of ", options.max_pixels,
                                                   " pixels (max_pixels)"));
  }
  const SourcePixels src{
      .data = pixels, .height = height, .width = width, .channels = channels, .bgr = false};
  Preprocess(src, options, out);
  return absl::OkStatus();
}

}  // namespace vitq::preprocessing
