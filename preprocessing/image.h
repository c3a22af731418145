// Image preprocessing: encoded bytes or raw pixels in, model input tensor out.
//
// The server runs this once per request, before batching. It reproduces the
// evaluation transform that timm and torchvision use for DeiT and Swin,
//
//   PIL.Image.open(f).convert('RGB')                      (or 'L' for channels = 1)
//   Resize(int(image_size / crop_pct), interpolation)     shorter side, antialiased
//   CenterCrop(image_size)
//   ToTensor()                                            uint8 -> [0, 1]
//   Normalize(mean, std)
//
// bit for bit: tests/preprocessing/parity_test.cc compares with torchvision on
// real PNG and JPEG photographs (PIL and OpenCV share the system libpng and
// libjpeg-turbo). Models trained with that transform see the same numbers here.
//
// Request data is untrusted: sizes are checked against the limits below before
// anything large is allocated (the image header is parsed by our own bounded
// parsers before the decoder runs), and every failure is an INVALID_ARGUMENT
// status whose message says what was wrong. OpenCV exceptions are caught.
//
// Supported encodings: JPEG, PNG, BMP, WebP; gray, gray+alpha, RGB, RGBA,
// palette; 8 or 16 bits per sample. Conversions follow PIL's convert():
// alpha is dropped (no compositing), gray is replicated for 3-channel models,
// color becomes ITU-R 601-2 luma for 1-channel models. 16-bit samples become
// 8-bit by round(v / 257); PIL instead keeps the high byte of 16-bit RGB and
// clips 16-bit gray at 255, so parity is not attempted there. EXIF orientation
// is not applied (PIL's open does not apply it either).
//
// Cost: decode dominates; the resampler computes only the center-crop window of
// the resized image, vectorized, and spreads large images over OpenMP threads
// (see PreprocessOptions::num_threads).

#ifndef VITQ_PREPROCESSING_IMAGE_H_
#define VITQ_PREPROCESSING_IMAGE_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace vitq::preprocessing {

struct PreprocessOptions {
  // Output height and width in pixels: the model's input resolution.
  // Default 224 (DeiT/Swin on ImageNet); 28 for Fashion-MNIST models. Range [1, 4096].
  int64_t image_size = 224;

  // Output channels: 3 = RGB, 1 = gray (PIL convert('L') luma). Default 3.
  int64_t channels = 3;

  // Fraction of the resized image kept by the center crop, in (0, 1]. The shorter
  // side is first resized to floor(image_size / crop_pct) pixels (0.875 -> 256 for
  // 224), then the central image_size x image_size square is kept. 1.0 = no margin.
  // Read with 6 decimal digits, so 0.8 gives Python's int(224 / 0.8) = 280 even
  // though the float 0.8f is slightly above 0.8. Default 0.875 (timm's DeiT).
  float crop_pct = 0.875f;

  // Per-channel mean and standard deviation subtracted from / divided into the
  // [0, 1] pixel values: out = (v / 255 - mean[c]) / std[c]. Sizes must equal
  // `channels`; std > 0. Default: ImageNet statistics.
  std::vector<float> mean = {0.485f, 0.456f, 0.406f};
  std::vector<float> std = {0.229f, 0.224f, 0.225f};

  // Resampling filter of the resize, with PIL's antialiasing on downscale:
  // "bicubic" (Keys cubic, a = -0.5; timm's default) or "bilinear" (triangle).
  std::string interpolation = "bicubic";

  // Largest width * height accepted, in pixels, as declared by the image header.
  // Checked before decoding, so a small file declaring a huge image is rejected
  // without allocating it. Default 50'000'000 (a 50 MP photo, ~150 MB decoded).
  int64_t max_pixels = 50'000'000;

  // Largest encoded input accepted, in bytes. Default 64 MiB. At most 2^31 - 1.
  int64_t max_bytes = int64_t{64} << 20;

  // OpenMP threads for resampling one large image (above a few million
  // multiply-adds; small images always run on the calling thread).
  // 0 = OpenMP's default (OMP_NUM_THREADS or all cores); 1 = never fork, for
  // servers that already run one request per core. Default 0.
  int64_t num_threads = 0;
};

// Checks ranges and sizes of `options`; INVALID_ARGUMENT naming the bad field.
absl::Status ValidateOptions(const PreprocessOptions& options);

// Decodes `encoded` (JPEG/PNG/BMP/WebP) and writes the model input into `out`,
// resized to channels * image_size * image_size floats, layout (C, H, W).
// INVALID_ARGUMENT for bad options, inputs over the limits, unknown formats and
// undecodable or truncated data; `out` is unspecified after an error.
absl::Status PreprocessImage(std::span<const uint8_t> encoded, const PreprocessOptions& options,
                             std::vector<float>& out);

// Same from decoded 8-bit pixels: (height, width, channels) interleaved, rows
// contiguous, channels 1 (gray) or 3 (RGB order). For raw datasets such as
// Fashion-MNIST. The pixel count is checked against max_pixels.
absl::Status PreprocessPixels(const uint8_t* pixels, int64_t height, int64_t width,
                              int64_t channels, const PreprocessOptions& options,
                              std::vector<float>& out);

}  // namespace vitq::preprocessing

#endif  // VITQ_PREPROCESSING_IMAGE_H_
