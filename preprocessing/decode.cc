#include "preprocessing/decode.h"

#include <limits>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "preprocessing/image_header.h"

namespace vitq::preprocessing {
namespace {

absl::Status CheckLimits(std::span<const uint8_t> encoded, const DecodeLimits& limits,
                         ImageFormat* format) {
  if (static_cast<int64_t>(encoded.size()) > limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("encoded image is ", encoded.size(),
                                                   " bytes, above the limit of ", limits.max_bytes,
                                                   " (max_bytes)"));
  }
  absl::StatusOr<ImageHeader> header = ReadImageHeader(encoded);
  if (!header.ok()) return header.status();
  // Both sides are below 2^31, so the product fits in int64.
  const int64_t pixels = header->width * header->height;
  if (pixels > limits.max_pixels) {
    return absl::InvalidArgumentError(absl::StrCat(
        FormatName(header->format), " header declares ", header->width, "x", header->height, " = ",
        pixels, " pixels, above the limit of ", limits.max_pixels, " (max_pixels)"));
  }
  *format = header->format;
  if (header->format == ImageFormat::kJpeg) return CheckJpegComplete(encoded);
  return absl::OkStatus();
}

absl::StatusOr<cv::Mat> Decode(std::span<const uint8_t> encoded, ImageFormat format) {
  if (encoded.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError("cannot decode image: input above 2^31 - 1 bytes");
  }
  // imdecode only reads its input; the const_cast lets a Mat header wrap it.
  const cv::Mat buffer(1, static_cast<int>(encoded.size()), CV_8UC1,
                       const_cast<uint8_t*>(encoded.data()));
  cv::Mat image;
  try {
    image = cv::imdecode(buffer, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot decode image: ", FormatName(format), " decoder failed: ", e.what()));
  }
  if (image.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot decode image: ", FormatName(format), " data is corrupt or truncated"));
  }
  return image;
}

}  // namespace

cv::Mat SixteenToEightBit(const cv::Mat& image16) {
  cv::Mat image8(image16.rows, image16.cols, CV_MAKETYPE(CV_8U, image16.channels()));
  const int64_t samples = static_cast<int64_t>(image16.cols) * image16.channels();
  for (int y = 0; y < image16.rows; ++y) {
    const uint16_t* in = image16.ptr<uint16_t>(y);
    uint8_t* out = image8.ptr<uint8_t>(y);
    // (v + 128) / 257 == round(v / 257): v / 257 is never exactly k + 0.5.
    for (int64_t i = 0; i < samples; ++i) out[i] = static_cast<uint8_t>((in[i] + 128u) / 257u);
  }
  return image8;
}

absl::StatusOr<cv::Mat> DecodeImage(std::span<const uint8_t> encoded, const DecodeLimits& limits) {
  ImageFormat format = ImageFormat::kPng;
  if (absl::Status status = CheckLimits(encoded, limits, &format); !status.ok()) return status;
  absl::StatusOr<cv::Mat> image = Decode(encoded, format);
  if (!image.ok()) return image.status();
  // The header said otherwise only if the file is inconsistent; stay within the limit anyway.
  if (static_cast<int64_t>(image->rows) * image->cols > limits.max_pixels) {
    return absl::InvalidArgumentError("cannot decode image: decoded size exceeds max_pixels");
  }
  if (image->channels() < 1 || image->channels() > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot decode image: unsupported channel count ", image->channels()));
  }
  switch (image->depth()) {
    case CV_8U:
      return image->isContinuous() ? *std::move(image) : image->clone();
    case CV_16U:
      return SixteenToEightBit(*image);
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot decode image: unsupported sample depth (OpenCV depth ", image->depth(), ")"));
  }
}

}  // namespace vitq::preprocessing
