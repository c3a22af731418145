// Helpers shared by the preprocessing tests: small images encoded in memory.

#ifndef VITQ_TESTS_PREPROCESSING_TEST_IMAGES_H_
#define VITQ_TESTS_PREPROCESSING_TEST_IMAGES_H_

#include <cstdint>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

namespace vitq::preprocessing::test_images {

// Encodes with OpenCV; `extension` is ".png", ".jpg", ".bmp" or ".webp".
inline std::vector<uint8_t> Encode(const cv::Mat& image, const std::string& extension,
                                   const std::vector<int>& params = {}) {
  std::vector<uint8_t> bytes;
  cv::imencode(extension, image, bytes, params);
  return bytes;
}

// Deterministic pseudo-random pixels (rows, cols) of `type`.
inline cv::Mat RandomImage(int rows, int cols, int type, uint64_t seed = 1) {
  cv::Mat image(rows, cols, type);
  cv::RNG rng(seed);
  const double high = CV_MAT_DEPTH(type) == CV_16U ? 65536 : 256;
  rng.fill(image, cv::RNG::UNIFORM, 0, high);
  return image;
}

// A photo-like image: smooth gradients plus noise, so that JPEG keeps a real
// entropy-coded scan and resampling has structure to filter.
inline cv::Mat SmoothImage(int rows, int cols, int channels, uint64_t seed = 1) {
  cv::Mat image(rows, cols, CV_MAKETYPE(CV_8U, channels));
  cv::RNG rng(seed);
  for (int y = 0; y < rows; ++y) {
    for (int x = 0; x < cols; ++x) {
      for (int c = 0; c < channels; ++c) {
        const int v = (x * 255 / cols + y * 128 / rows + 60 * c) % 256 + rng.uniform(-8, 9);
        image.ptr<uint8_t>(y)[x * channels + c] = cv::saturate_cast<uint8_t>(v);
      }
    }
  }
  return image;
}

}  // namespace vitq::preprocessing::test_images

#endif  // VITQ_TESTS_PREPROCESSING_TEST_IMAGES_H_
