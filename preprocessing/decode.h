// Decodes untrusted image bytes to 8-bit pixels with OpenCV, within size limits.
//
// Order of checks: byte limit, format and declared size from the header
// (image_header.h) against the pixel limit, JPEG completeness, then
// cv::imdecode(IMREAD_UNCHANGED) so that alpha and 16-bit depth are visible
// instead of being converted by OpenCV's own rules. 16-bit samples become
// 8-bit by round(v / 257). OpenCV exceptions are caught here.
// Building block of PreprocessImage (image.h); exposed for tests.

#ifndef VITQ_PREPROCESSING_DECODE_H_
#define VITQ_PREPROCESSING_DECODE_H_

#include <cstdint>
#include <opencv2/core/mat.hpp>
#include <span>

#include "absl/status/statusor.h"

namespace vitq::preprocessing {

struct DecodeLimits {
  int64_t max_pixels = 0;  // width * height declared by the header
  int64_t max_bytes = 0;   // size of the encoded input
};

// Returns a continuous CV_8U matrix (height, width) with OpenCV's channel
// order: 1 = gray, 2 = gray + alpha, 3 = BGR, 4 = BGRA.
// INVALID_ARGUMENT ("cannot decode image: ..." or "... above the limit ...").
absl::StatusOr<cv::Mat> DecodeImage(std::span<const uint8_t> encoded, const DecodeLimits& limits);

// round(v / 257) for every sample: maps 0..65535 onto 0..255 exactly.
cv::Mat SixteenToEightBit(const cv::Mat& image16);

}  // namespace vitq::preprocessing

#endif  // VITQ_PREPROCESSING_DECODE_H_
