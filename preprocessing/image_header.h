// Reads an encoded image's format and declared size without decoding it.
//
// The decoder allocates width * height * channels bytes as soon as it has read
// the header, so a 100-byte PNG claiming 100000 x 100000 pixels would make it ask
// for 30 GB. These small parsers read the same header fields first (PNG IHDR,
// JPEG SOFn, BMP info header, WebP VP8/VP8L/VP8X) with every read bounds-checked,
// so the caller can compare the size with its limit before decoding.
// Building block of PreprocessImage (image.h); exposed for tests.

#ifndef VITQ_PREPROCESSING_IMAGE_HEADER_H_
#define VITQ_PREPROCESSING_IMAGE_HEADER_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vitq::preprocessing {

enum class ImageFormat { kJpeg, kPng, kBmp, kWebp };

absl::string_view FormatName(ImageFormat format);

struct ImageHeader {
  ImageFormat format = ImageFormat::kPng;
  int64_t width = 0;   // pixels, > 0
  int64_t height = 0;  // pixels, > 0
};

// Identifies the format from its signature and reads the declared size.
// INVALID_ARGUMENT ("cannot decode image: ...") for an unknown signature, a
// header cut short, or a zero size.
absl::StatusOr<ImageHeader> ReadImageHeader(std::span<const uint8_t> bytes);

// libjpeg pads a truncated JPEG with gray and reports success with a warning
// that OpenCV drops; PIL refuses such files. This rejects a JPEG that has no
// end-of-image marker after its first scan. `bytes` must be a JPEG.
absl::Status CheckJpegComplete(std::span<const uint8_t> bytes);

}  // namespace vitq::preprocessing

#endif  // VITQ_PREPROCESSING_IMAGE_HEADER_H_
