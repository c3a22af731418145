#include "preprocessing/image_header.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "preprocessing/decode.h"
#include "tests/preprocessing/test_images.h"

namespace vitq::preprocessing {
namespace {

using test_images::Encode;
using test_images::SmoothImage;
using ::testing::HasSubstr;

void ExpectSize(const std::vector<uint8_t>& bytes, ImageFormat format, int64_t width,
                int64_t height) {
  const absl::StatusOr<ImageHeader> header = ReadImageHeader(bytes);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->format, format) << FormatName(format);
  EXPECT_EQ(header->width, width) << FormatName(format);
  EXPECT_EQ(header->height, height) << FormatName(format);
}

void ExpectInvalid(const std::vector<uint8_t>& bytes, const std::string& phrase) {
  const absl::StatusOr<ImageHeader> header = ReadImageHeader(bytes);
  ASSERT_FALSE(header.ok());
  EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(header.status().message()), HasSubstr(phrase));
}

void PutLe(std::vector<uint8_t>& bytes, size_t at, uint32_t value, int n) {
  for (int i = 0; i < n; ++i) bytes[at + i] = static_cast<uint8_t>(value >> (8 * i));
}

TEST(ImageHeaderTest, ReadsSizeOfEveryEncoderOutput) {
  const cv::Mat color = SmoothImage(23, 37, 3);
  const cv::Mat gray = SmoothImage(23, 37, 1);
  ExpectSize(Encode(color, ".png"), ImageFormat::kPng, 37, 23);
  ExpectSize(Encode(gray, ".png"), ImageFormat::kPng, 37, 23);
  ExpectSize(Encode(color, ".jpg"), ImageFormat::kJpeg, 37, 23);  // baseline SOF0
  ExpectSize(Encode(gray, ".jpg"), ImageFormat::kJpeg, 37, 23);
  ExpectSize(Encode(color, ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1}), ImageFormat::kJpeg, 37,
             23);  // SOF2
  ExpectSize(Encode(color, ".bmp"), ImageFormat::kBmp, 37, 23);
  ExpectSize(Encode(color, ".webp", {cv::IMWRITE_WEBP_QUALITY, 80}), ImageFormat::kWebp, 37,
             23);  // VP8
  ExpectSize(Encode(color, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}), ImageFormat::kWebp, 37,
             23);  // VP8L
}

TEST(ImageHeaderTest, JpegSkipsApplicationSegments) {
  // An APP1 segment (as EXIF adds) holding bytes that look like a SOF marker.
  std::vector<uint8_t> bytes = Encode(SmoothImage(23, 37, 3), ".jpg");
  const std::vector<uint8_t> app1 = {0xFF, 0xE1, 0x00, 0x0B, 0xFF, 0xC0, 0x00,
                                     0x11, 0x08, 0x7F, 0xFF, 0x7F, 0xFF};
  bytes.insert(bytes.begin() + 2, app1.begin(), app1.end());
  ExpectSize(bytes, ImageFormat::kJpeg, 37, 23);
  EXPECT_TRUE(CheckJpegComplete(bytes).ok());
}

TEST(ImageHeaderTest, BmpCoreHeaderAndTopDown) {
  std::vector<uint8_t> bytes = Encode(SmoothImage(23, 37, 3), ".bmp");
  PutLe(bytes, 22, static_cast<uint32_t>(-23), 4);  // negative height: rows stored top-down
  ExpectSize(bytes, ImageFormat::kBmp, 37, 23);

  std::vector<uint8_t> core(26, 0);  // OS/2 1.x: 12-byte info header, 16-bit sizes
  core[0] = 'B';
  core[1] = 'M';
  PutLe(core, 14, 12, 4);
  PutLe(core, 18, 640, 2);
  PutLe(core, 20, 480, 2);
  ExpectSize(core, ImageFormat::kBmp, 640, 480);
}

TEST(ImageHeaderTest, WebpExtendedCanvas) {
  std::vector<uint8_t> bytes(30, 0);
  std::copy_n("RIFF", 4, bytes.begin());
  std::copy_n("WEBPVP8X", 8, bytes.begin() + 8);
  PutLe(bytes, 24, 4999, 3);  // width - 1
  PutLe(bytes, 27, 2999, 3);  // height - 1
  ExpectSize(bytes, ImageFormat::kWebp, 5000, 3000);
}

TEST(ImageHeaderTest, HugeDeclaredSizesAreReported) {
  // The parser reports the size; DecodeImage compares it with the limit.
  std::vector<uint8_t> png = Encode(SmoothImage(23, 37, 3), ".png");
  const std::vector<uint8_t> size = {0, 0x01, 0x86, 0xA0, 0, 0x01, 0x86, 0xA0};
  std::copy(size.begin(), size.end(), png.begin() + 16);  // IHDR width, height
  ExpectSize(png, ImageFormat::kPng, 100000, 100000);
}

TEST(ImageHeaderTest, RejectsUnknownAndTruncatedHeaders) {
  ExpectInvalid({}, "input is empty");
  ExpectInvalid({'G', 'I', 'F', '8', '9', 'a', 0, 0}, "unknown format");
  ExpectInvalid({'I', 'I', 42, 0, 8, 0, 0, 0}, "unknown format");  // TIFF
  const cv::Mat image = SmoothImage(23, 37, 3);
  const std::vector<std::pair<std::string, std::string>> formats = {
      {".png", "PNG"}, {".jpg", "JPEG"}, {".bmp", "BMP"}, {".webp", "WebP"}};
  for (const auto& [extension, name] : formats) {
    const std::vector<uint8_t> bytes = Encode(image, extension);
    ExpectInvalid({bytes.begin(), bytes.begin() + 16}, "cannot decode image: " + name);
  }
}

TEST(ImageHeaderTest, RejectsZeroSizes) {
  std::vector<uint8_t> png = Encode(SmoothImage(23, 37, 3), ".png");
  png[16] = png[17] = png[18] = png[19] = 0;  // width 0
  ExpectInvalid(png, "PNG header declares an empty image (0x23)");
}

TEST(ImageHeaderTest, JpegCompleteness) {
  const std::vector<uint8_t> bytes = Encode(SmoothImage(64, 64, 3), ".jpg");
  EXPECT_TRUE(CheckJpegComplete(bytes).ok());
  for (size_t size : {bytes.size() / 2, bytes.size() - 1}) {
    const absl::Status status = CheckJpegComplete({bytes.data(), size});
    EXPECT_THAT(std::string(status.message()), HasSubstr("truncated (no end-of-image marker)"));
  }
}

TEST(DecodeImageTest, RejectsDeclaredSizeBeforeDecoding) {
  // A real JPEG whose frame header is patched to 60000 x 60000: the decoder
  // would allocate 10 GB; the header check refuses first.
  std::vector<uint8_t> jpeg = Encode(SmoothImage(23, 37, 3), ".jpg");
  const std::vector<uint8_t> sof0 = {0xFF, 0xC0};
  const auto at = std::search(jpeg.begin(), jpeg.end(), sof0.begin(), sof0.end()) - jpeg.begin();
  jpeg[at + 5] = 0xEA;  // height 0xEA60 = 60000
  jpeg[at + 6] = 0x60;
  jpeg[at + 7] = 0xEA;  // width
  jpeg[at + 8] = 0x60;
  const absl::StatusOr<cv::Mat> image =
      DecodeImage(jpeg, DecodeLimits{.max_pixels = 50'000'000, .max_bytes = 1 << 20});
  ASSERT_FALSE(image.ok());
  EXPECT_THAT(std::string(image.status().message()),
              HasSubstr("JPEG header declares 60000x60000 = 3600000000 pixels"));
}

TEST(DecodeImageTest, SixteenToEightBitRoundsToNearest) {
  cv::Mat image16(1, 6, CV_16UC1);
  const uint16_t in[] = {0, 128, 129, 257 * 100 + 128, 257 * 100 + 129, 65535};
  const uint8_t expected[] = {0, 0, 1, 100, 101, 255};
  std::copy(std::begin(in), std::end(in), image16.ptr<uint16_t>());
  const cv::Mat image8 = SixteenToEightBit(image16);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(image8.at<uint8_t>(0, i), expected[i]) << in[i];
}

}  // namespace
}  // namespace vitq::preprocessing
