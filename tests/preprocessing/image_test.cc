#include "preprocessing/image.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tests/preprocessing/test_images.h"

namespace vitq::preprocessing {
namespace {

using test_images::Encode;
using test_images::RandomImage;
using test_images::SmoothImage;
using ::testing::HasSubstr;

// Options whose output is the plain v / 255 of the kept pixels.
PreprocessOptions Unnormalized(int64_t image_size, int64_t channels, float crop_pct = 1.0f) {
  PreprocessOptions options;
  options.image_size = image_size;
  options.channels = channels;
  options.crop_pct = crop_pct;
  options.mean.assign(channels, 0.0f);
  options.std.assign(channels, 1.0f);
  return options;
}

float Unit(int v) { return static_cast<float>(v) / 255.0f; }

// (C, H, W) float element.
float At(const std::vector<float>& chw, int64_t size, int64_t c, int64_t y, int64_t x) {
  return chw[(c * size + y) * size + x];
}

std::vector<float> MustPreprocess(std::span<const uint8_t> bytes,
                                  const PreprocessOptions& options) {
  std::vector<float> out;
  const absl::Status status = PreprocessImage(bytes, options, out);
  EXPECT_TRUE(status.ok()) << status;
  return out;
}

void ExpectInvalid(const absl::Status& status, const std::string& phrase) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(phrase));
}

// --- Geometry and arithmetic on raw pixels -------------------------------

TEST(PreprocessPixelsTest, CenterCropRoundsHalfOffsetsToEven) {
  // 4 rows: shorter side already 4, so no resampling; only the crop acts.
  // torchvision: left = int(round((w - 4) / 2.0)) = round(1.5) = 2 for w = 7,
  // round(2.5) = 2 for w = 9 (Python rounds halves to even).
  for (const auto& [width, left] : std::vector<std::pair<int, int>>{{7, 2}, {9, 2}, {6, 1}}) {
    std::vector<uint8_t> pixels(4 * width);
    for (int y = 0; y < 4; ++y) {
      for (int x = 0; x < width; ++x) pixels[y * width + x] = static_cast<uint8_t>(10 * x + y);
    }
    std::vector<float> out;
    ASSERT_TRUE(PreprocessPixels(pixels.data(), 4, width, 1, Unnormalized(4, 1), out).ok());
    ASSERT_EQ(out.size(), 16u);
    for (int y = 0; y < 4; ++y) {
      for (int x = 0; x < 4; ++x) {
        EXPECT_EQ(At(out, 4, 0, y, x), Unit(10 * (x + left) + y)) << "width " << width;
      }
    }
  }
}

TEST(PreprocessPixelsTest, NormalizesPerChannel) {
  const std::vector<uint8_t> pixels = {0, 128, 255, 0, 128, 255, 0, 128, 255, 0, 128, 255};
  PreprocessOptions options = Unnormalized(2, 3);
  options.mean = {0.485f, 0.456f, 0.406f};
  options.std = {0.229f, 0.224f, 0.225f};
  std::vector<float> out;
  ASSERT_TRUE(PreprocessPixels(pixels.data(), 2, 2, 3, options, out).ok());
  ASSERT_EQ(out.size(), 12u);
  const int values[] = {0, 128, 255};
  for (int c = 0; c < 3; ++c) {
    const float expected = (Unit(values[c]) - options.mean[c]) / options.std[c];
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out[c * 4 + i], expected) << "channel " << c;
  }
  EXPECT_NEAR(out[0], -0.485f / 0.229f, 1e-6);
  EXPECT_NEAR(out[8], (1.0f - 0.406f) / 0.225f, 1e-6);
}

TEST(PreprocessPixelsTest, GrayIsReplicatedForRgbModels) {
  const std::vector<uint8_t> pixels = {0, 50, 100, 255};
  std::vector<float> out;
  ASSERT_TRUE(PreprocessPixels(pixels.data(), 2, 2, 1, Unnormalized(2, 3), out).ok());
  ASSERT_EQ(out.size(), 12u);
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out[c * 4 + i], Unit(pixels[i]));
  }
}

TEST(PreprocessPixelsTest, RgbBecomesPilLumaForGrayModels) {
  // PIL's convert('L'): (R 19595 + G 38470 + B 7471 + 2^15) >> 16, i.e.
  // R 0.299 + G 0.587 + B 0.114 rounded. Pure red 76, green 150, blue 29.
  const std::vector<uint8_t> pixels = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 200, 30};
  std::vector<float> out;
  ASSERT_TRUE(PreprocessPixels(pixels.data(), 2, 2, 3, Unnormalized(2, 1), out).ok());
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0], Unit(76));
  EXPECT_EQ(out[1], Unit(150));
  EXPECT_EQ(out[2], Unit(29));
  EXPECT_EQ(out[3], Unit(124));  // 10*.299 + 200*.587 + 30*.114 = 123.8
}

TEST(PreprocessPixelsTest, IdentityWhenSizesMatch) {
  const cv::Mat image = RandomImage(28, 28, CV_8UC1);
  std::vector<float> out;
  ASSERT_TRUE(PreprocessPixels(image.data, 28, 28, 1, Unnormalized(28, 1), out).ok());
  ASSERT_EQ(out.size(), 28u * 28u);
  for (int i = 0; i < 28 * 28; ++i) ASSERT_EQ(out[i], Unit(image.data[i])) << i;
}

TEST(PreprocessPixelsTest, ConstantImageStaysConstant) {
  // The weights of every output pixel sum to one (in fixed point), for shrinking
  // and enlarging, with either filter.
  for (const auto& [height, width] : std::vector<std::pair<int, int>>{{300, 200}, {50, 40}}) {
    for (const char* filter : {"bicubic", "bilinear"}) {
      const std::vector<uint8_t> pixels(height * width * 3, 77);
      PreprocessOptions options = Unnormalized(224, 3, 0.875f);
      options.interpolation = filter;
      std::vector<float> out;
      ASSERT_TRUE(PreprocessPixels(pixels.data(), height, width, 3, options, out).ok());
      ASSERT_EQ(out.size(), 3u * 224 * 224);
      for (float v : out) ASSERT_EQ(v, Unit(77)) << height << "x" << width << " " << filter;
    }
  }
}

TEST(PreprocessPixelsTest, ExtremeAspectRatioStaysCheap) {
  // torchvision would resize 1 x 50000 to 256 x 12800000 (3.3 G pixels); only
  // the 224 x 224 window is computed here.
  const std::vector<uint8_t> pixels(50000, 200);
  std::vector<float> out;
  ASSERT_TRUE(PreprocessPixels(pixels.data(), 1, 50000, 1, Unnormalized(224, 3, 0.875f), out).ok());
  ASSERT_EQ(out.size(), 3u * 224 * 224);
  for (float v : out) ASSERT_EQ(v, Unit(200));
}

TEST(PreprocessPixelsTest, ThreadCountDoesNotChangeOutput) {
  const cv::Mat image = SmoothImage(1500, 2000, 3);
  PreprocessOptions options;
  options.num_threads = 1;
  std::vector<float> serial;
  ASSERT_TRUE(PreprocessPixels(image.data, 1500, 2000, 3, options, serial).ok());
  options.num_threads = 2;
  std::vector<float> parallel;
  ASSERT_TRUE(PreprocessPixels(image.data, 1500, 2000, 3, options, parallel).ok());
  EXPECT_EQ(serial, parallel);
}

// --- Decoding --------------------------------------------------------------

TEST(PreprocessImageTest, DecodesBgrPngAsRgb) {
  const cv::Mat image(6, 6, CV_8UC3, cv::Scalar(10, 20, 30));  // B, G, R
  const std::vector<float> out = MustPreprocess(Encode(image, ".png"), Unnormalized(6, 3));
  ASSERT_EQ(out.size(), 3u * 36);
  EXPECT_EQ(At(out, 6, 0, 3, 3), Unit(30));
  EXPECT_EQ(At(out, 6, 1, 3, 3), Unit(20));
  EXPECT_EQ(At(out, 6, 2, 3, 3), Unit(10));
}

TEST(PreprocessImageTest, DropsAlphaOfRgbaPng) {
  // PIL's convert('RGB') discards alpha without compositing: transparent
  // pixels keep their color.
  cv::Mat image(4, 4, CV_8UC4, cv::Scalar(10, 20, 30, 0));
  image.at<cv::Vec4b>(1, 1) = cv::Vec4b(200, 100, 50, 255);
  const std::vector<float> out = MustPreprocess(Encode(image, ".png"), Unnormalized(4, 3));
  ASSERT_EQ(out.size(), 3u * 16);
  EXPECT_EQ(At(out, 4, 0, 0, 0), Unit(30));
  EXPECT_EQ(At(out, 4, 2, 0, 0), Unit(10));
  EXPECT_EQ(At(out, 4, 0, 1, 1), Unit(50));
  EXPECT_EQ(At(out, 4, 1, 1, 1), Unit(100));
  EXPECT_EQ(At(out, 4, 2, 1, 1), Unit(200));
}

TEST(PreprocessImageTest, RgbaPngToGrayIgnoresAlpha) {
  const cv::Mat image(4, 4, CV_8UC4, cv::Scalar(0, 0, 255, 7));  // red, nearly transparent
  const std::vector<float> out = MustPreprocess(Encode(image, ".png"), Unnormalized(4, 1));
  ASSERT_EQ(out.size(), 16u);
  EXPECT_EQ(out[5], Unit(76));
}

TEST(PreprocessImageTest, SixteenBitPngIsRoundedToEightBits) {
  // round(v / 257): 65535 -> 255, 25828 = 257*100 + 128 -> 100, 25829 -> 101.
  cv::Mat image(2, 2, CV_16UC3, cv::Scalar(25828, 25829, 65535));  // B, G, R
  image.at<cv::Vec3w>(1, 1) = cv::Vec3w(0, 128, 129);
  const std::vector<float> out = MustPreprocess(Encode(image, ".png"), Unnormalized(2, 3));
  ASSERT_EQ(out.size(), 12u);
  EXPECT_EQ(At(out, 2, 0, 0, 0), Unit(255));
  EXPECT_EQ(At(out, 2, 1, 0, 0), Unit(101));
  EXPECT_EQ(At(out, 2, 2, 0, 0), Unit(100));
  EXPECT_EQ(At(out, 2, 0, 1, 1), Unit(1));
  EXPECT_EQ(At(out, 2, 1, 1, 1), Unit(0));
  EXPECT_EQ(At(out, 2, 2, 1, 1), Unit(0));
}

TEST(PreprocessImageTest, SixteenBitGrayPng) {
  const cv::Mat image(3, 3, CV_16UC1, cv::Scalar(257 * 42));
  const std::vector<float> out = MustPreprocess(Encode(image, ".png"), Unnormalized(3, 3));
  ASSERT_EQ(out.size(), 27u);
  for (float v : out) EXPECT_EQ(v, Unit(42));
}

TEST(PreprocessImageTest, LosslessFormatsRoundTrip) {
  const cv::Mat image = RandomImage(23, 23, CV_8UC3);  // BGR
  const std::vector<std::pair<std::string, std::vector<int>>> formats = {
      {".png", {}}, {".bmp", {}}, {".webp", {cv::IMWRITE_WEBP_QUALITY, 101}}};  // > 100: lossless
  for (const auto& [extension, params] : formats) {
    const std::vector<float> out =
        MustPreprocess(Encode(image, extension, params), Unnormalized(23, 3));
    ASSERT_EQ(out.size(), 3u * 23 * 23) << extension;
    for (int y = 0; y < 23; ++y) {
      for (int x = 0; x < 23; ++x) {
        const cv::Vec3b bgr = image.at<cv::Vec3b>(y, x);
        for (int c = 0; c < 3; ++c) {
          ASSERT_EQ(At(out, 23, c, y, x), Unit(bgr[2 - c])) << extension << " " << y << "," << x;
        }
      }
    }
  }
}

TEST(PreprocessImageTest, DecodesGrayAndColorJpeg) {
  for (int channels : {1, 3}) {
    const cv::Mat image(40, 40, CV_MAKETYPE(CV_8U, channels), cv::Scalar::all(120));
    const std::vector<float> out =
        MustPreprocess(Encode(image, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95}), Unnormalized(16, 3));
    ASSERT_EQ(out.size(), 3u * 16 * 16);
    for (float v : out) EXPECT_NEAR(v, Unit(120), 1.5f / 255);  // JPEG is lossy
  }
}

TEST(PreprocessImageTest, JpegWithTrailingBytesAfterEndMarker) {
  std::vector<uint8_t> bytes = Encode(SmoothImage(32, 32, 3), ".jpg");
  bytes.insert(bytes.end(), {0x00, 0x11, 0x22});  // some cameras append data
  MustPreprocess(bytes, Unnormalized(32, 3));
}

// --- Errors ----------------------------------------------------------------

TEST(PreprocessImageErrorTest, EmptyInput) {
  std::vector<float> out;
  ExpectInvalid(PreprocessImage({}, PreprocessOptions(), out),
                "cannot decode image: input is empty");
}

TEST(PreprocessImageErrorTest, RandomBytes) {
  const cv::Mat noise = RandomImage(1, 4096, CV_8UC1, 7);
  std::vector<float> out;
  ExpectInvalid(PreprocessImage({noise.data, 4096}, PreprocessOptions(), out),
                "cannot decode image: unknown format");
}

TEST(PreprocessImageErrorTest, GarbageAfterPngSignature) {
  std::vector<uint8_t> bytes = Encode(SmoothImage(32, 32, 3), ".png");
  const cv::Mat noise = RandomImage(1, static_cast<int>(bytes.size()) - 40, CV_8UC1, 9);
  std::copy(noise.data, noise.data + noise.cols, bytes.begin() + 40);  // keeps IHDR
  std::vector<float> out;
  ExpectInvalid(PreprocessImage(bytes, PreprocessOptions(), out), "cannot decode image: PNG");
}

TEST(PreprocessImageErrorTest, TruncatedPng) {
  const std::vector<uint8_t> bytes = Encode(SmoothImage(64, 64, 3), ".png");
  for (size_t size : {size_t{8}, size_t{20}, size_t{40}, bytes.size() / 2, bytes.size() - 1}) {
    std::vector<float> out;
    ExpectInvalid(PreprocessImage({bytes.data(), size}, PreprocessOptions(), out),
                  "cannot decode image: PNG");
  }
}

TEST(PreprocessImageErrorTest, TruncatedJpeg) {
  // libjpeg would pad these with gray and report success.
  const std::vector<uint8_t> bytes = Encode(SmoothImage(64, 64, 3), ".jpg");
  for (size_t size : {bytes.size() / 2, bytes.size() - 2, bytes.size() - 1}) {
    std::vector<float> out;
    ExpectInvalid(PreprocessImage({bytes.data(), size}, PreprocessOptions(), out), "truncated");
  }
  std::vector<float> out;
  ExpectInvalid(PreprocessImage({bytes.data(), 100}, PreprocessOptions(), out),
                "cannot decode image: JPEG");
}

TEST(PreprocessImageErrorTest, TruncatedBmpAndWebp) {
  const cv::Mat image = SmoothImage(64, 64, 3);
  for (const std::vector<uint8_t>& bytes : {Encode(image, ".bmp"), Encode(image, ".webp")}) {
    std::vector<float> out;
    ExpectInvalid(PreprocessImage({bytes.data(), bytes.size() / 2}, PreprocessOptions(), out),
                  "cannot decode image");
  }
}

TEST(PreprocessImageErrorTest, HugeDeclaredSizeIsRejectedFromTheHeader) {
  // A valid PNG start claiming 100000 x 100000 pixels (30 GB decoded), followed
  // by nothing: the header alone must be enough to refuse it.
  std::vector<uint8_t> bytes = {0x89, 'P',  'N',  'G',  '\r', '\n', 0x1a, '\n',  // signature
                                0,    0,    0,    13,   'I',  'H',  'D',  'R',   // chunk
                                0,    0x01, 0x86, 0xA0, 0,    0x01, 0x86, 0xA0,  // 100000 x 100000
                                8,    2,    0,    0,    0,    0,    0,    0,    0};  // RGB8, CRC
  std::vector<float> out;
  const absl::Status status = PreprocessImage(bytes, PreprocessOptions(), out);
  ExpectInvalid(status, "PNG header declares 100000x100000 = 10000000000 pixels");
  EXPECT_THAT(std::string(status.message()), HasSubstr("limit of 50000000 (max_pixels)"));
}

TEST(PreprocessImageErrorTest, PixelLimitAppliesToRealImages) {
  const std::vector<uint8_t> bytes = Encode(SmoothImage(64, 64, 3), ".jpg");
  PreprocessOptions options;
  options.max_pixels = 64 * 64 - 1;
  std::vector<float> out;
  ExpectInvalid(PreprocessImage(bytes, options, out), "JPEG header declares 64x64 = 4096 pixels");
  options.max_pixels = 64 * 64;
  EXPECT_TRUE(PreprocessImage(bytes, options, out).ok());
}

TEST(PreprocessImageErrorTest, ByteLimit) {
  const std::vector<uint8_t> bytes = Encode(SmoothImage(64, 64, 3), ".png");
  PreprocessOptions options;
  options.max_bytes = static_cast<int64_t>(bytes.size()) - 1;
  std::vector<float> out;
  ExpectInvalid(PreprocessImage(bytes, options, out), "above the limit of");
  ExpectInvalid(PreprocessImage(bytes, options, out), "(max_bytes)");
}

TEST(PreprocessImageErrorTest, UnsupportedFormat) {
  const std::vector<uint8_t> gif = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0, 0, 0};
  std::vector<float> out;
  ExpectInvalid(PreprocessImage(gif, PreprocessOptions(), out),
                "unknown format (expected JPEG, PNG, BMP or WebP)");
}

TEST(PreprocessImageErrorTest, CorruptedBytesNeverCrash) {
  // Bytes flipped in the header area or anywhere: a status, never a crash or an
  // out-of-bounds read (the asan preset runs this too).
  const cv::Mat image = SmoothImage(32, 48, 3);
  const std::vector<std::pair<std::string, std::vector<int>>> formats = {
      {".png", {}}, {".jpg", {}}, {".bmp", {}}, {".webp", {}}};
  PreprocessOptions options;
  options.max_pixels = 1 << 20;
  cv::RNG rng(3);
  for (const auto& [extension, params] : formats) {
    const std::vector<uint8_t> clean = Encode(image, extension, params);
    for (int trial = 0; trial < 50; ++trial) {
      std::vector<uint8_t> bytes = clean;
      const int span = trial % 2 == 0 ? 64 : static_cast<int>(bytes.size());
      for (int flips = rng.uniform(1, 5); flips > 0; --flips) {
        bytes[rng.uniform(0, span)] = static_cast<uint8_t>(rng.uniform(0, 256));
      }
      std::vector<float> out;
      const absl::Status status = PreprocessImage(bytes, options, out);
      if (status.ok()) {
        EXPECT_EQ(out.size(), 3u * 224 * 224);
      } else {
        EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
      }
    }
  }
}

TEST(PreprocessPixelsErrorTest, BadArguments) {
  const std::vector<uint8_t> pixels(64, 0);
  std::vector<float> out;
  ExpectInvalid(PreprocessPixels(nullptr, 4, 4, 1, Unnormalized(4, 1), out), "pixels is null");
  ExpectInvalid(PreprocessPixels(pixels.data(), 0, 4, 1, Unnormalized(4, 1), out),
                "image size must be positive");
  ExpectInvalid(PreprocessPixels(pixels.data(), 4, 4, 4, Unnormalized(4, 1), out),
                "1 (gray) or 3 (RGB) channels, got 4");
  PreprocessOptions options = Unnormalized(4, 1);
  options.max_pixels = 15;
  ExpectInvalid(PreprocessPixels(pixels.data(), 4, 4, 1, options, out), "(max_pixels)");
}

TEST(ValidateOptionsTest, AcceptsDefaults) {
  EXPECT_TRUE(ValidateOptions(PreprocessOptions()).ok());
}

TEST(ValidateOptionsTest, RejectsEachBadField) {
  const auto expect_invalid = [](auto mutate, const std::string& phrase) {
    PreprocessOptions options;
    mutate(options);
    ExpectInvalid(ValidateOptions(options), phrase);
    // Every entry point validates before touching its input.
    std::vector<float> out;
    const uint8_t pixel = 0;
    ExpectInvalid(PreprocessPixels(&pixel, 1, 1, 1, options, out), phrase);
  };
  expect_invalid([](PreprocessOptions& o) { o.channels = 2; }, "channels must be 1 or 3, got 2");
  expect_invalid([](PreprocessOptions& o) { o.mean = {0.5f}; },
                 "mean and std need 3 values (one per channel), got 1 and 3");
  expect_invalid([](PreprocessOptions& o) { o.std.push_back(1.0f); }, "mean and std need 3 values");
  expect_invalid([](PreprocessOptions& o) { o.std[1] = 0.0f; }, "std must be positive");
  expect_invalid([](PreprocessOptions& o) { o.crop_pct = 0.0f; }, "crop_pct must be in (0, 1]");
  expect_invalid([](PreprocessOptions& o) { o.crop_pct = -0.5f; }, "crop_pct must be in (0, 1]");
  expect_invalid([](PreprocessOptions& o) { o.crop_pct = 1.5f; }, "crop_pct must be in (0, 1]");
  expect_invalid([](PreprocessOptions& o) { o.crop_pct = 1e-6f; }, "crop_pct 1e-06 is too small");
  expect_invalid([](PreprocessOptions& o) { o.image_size = 0; }, "image_size must be in [1, 4096]");
  expect_invalid([](PreprocessOptions& o) { o.interpolation = "nearest"; },
                 "interpolation must be \"bicubic\" or \"bilinear\", got \"nearest\"");
  expect_invalid([](PreprocessOptions& o) { o.max_pixels = 0; }, "max_pixels");
  expect_invalid([](PreprocessOptions& o) { o.max_bytes = int64_t{1} << 40; }, "max_bytes");
  expect_invalid([](PreprocessOptions& o) { o.num_threads = -1; }, "num_threads");
}

}  // namespace
}  // namespace vitq::preprocessing
