#include "preprocessing/resample.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <vector>

#include "preprocessing/geometry.h"
#include "tests/preprocessing/test_images.h"

namespace vitq::preprocessing {
namespace {

using test_images::SmoothImage;

PixelView View(const cv::Mat& image) {
  return PixelView{image.data, image.rows, image.cols, image.channels(),
                   static_cast<int64_t>(image.step)};
}

std::vector<uint8_t> ResizeAll(const PixelView& src, int64_t height, int64_t width,
                               ResampleFilter filter) {
  return ResizeWindow(src, height, width, Window{0, 0, height, width}, filter, 1);
}

TEST(ResampleTest, BilinearDownscaleByTwoByHand) {
  // Output 0 is centred on source 1.0 with support 2 (scale 2): taps at 0, 1, 2
  // weigh 0.75, 0.75, 0.25 -> (0 * 3 + 100 * 3 + 200) / 7 = 71.4. Output 1:
  // (100 + 200 * 3 + 250 * 3) / 7 = 207.1. Pillow 9.4 gives [71, 207].
  const std::vector<uint8_t> row = {0, 100, 200, 250};
  const PixelView src{row.data(), 1, 4, 1, 4};
  EXPECT_EQ(ResizeAll(src, 1, 2, ResampleFilter::kBilinear), (std::vector<uint8_t>{71, 207}));
  // Same input through Pillow's bicubic: [61, 218].
  EXPECT_EQ(ResizeAll(src, 1, 2, ResampleFilter::kBicubic), (std::vector<uint8_t>{61, 218}));
}

TEST(ResampleTest, BilinearUpscaleByHand) {
  // Centres at 0.25, 0.75, 1.25, 1.75 with support 1: 10, 10 * .75 + 200 * .25
  // = 57.5 (rounds up), 152.5, 200. Pillow 9.4 gives [10, 58, 153, 200].
  const std::vector<uint8_t> row = {10, 200};
  const PixelView src{row.data(), 1, 2, 1, 2};
  EXPECT_EQ(ResizeAll(src, 1, 4, ResampleFilter::kBilinear),
            (std::vector<uint8_t>{10, 58, 153, 200}));
}

TEST(ResampleTest, WeightsSumToOneInFixedPoint) {
  for (const auto& [in, out] :
       std::vector<std::pair<int, int>>{{512, 256}, {1411, 256}, {28, 224}}) {
    for (ResampleFilter filter : {ResampleFilter::kBicubic, ResampleFilter::kBilinear}) {
      const PassWeights pass = ComputePassWeights(in, out, 0, out, filter);
      for (int j = 0; j < out; ++j) {
        ASSERT_LE(pass.taps[j], pass.max_taps);
        ASSERT_GE(pass.first_input[j], 0);
        ASSERT_LE(pass.first_input[j] + pass.taps[j], in);
        const int64_t sum =
            std::accumulate(pass.weights.begin() + j * pass.max_taps,
                            pass.weights.begin() + (j + 1) * pass.max_taps, int64_t{0});
        // Each weight is rounded once: the sum is off by at most half a unit per tap.
        EXPECT_NEAR(sum, 1 << 22, pass.taps[j]) << in << "->" << out << " output " << j;
      }
    }
  }
}

TEST(ResampleTest, WindowEqualsCropOfFullResize) {
  const cv::Mat image = SmoothImage(97, 131, 3);
  const Window window{.top = 7, .left = 11, .height = 40, .width = 50};
  for (const auto& [height, width] :
       std::vector<std::pair<int64_t, int64_t>>{{60, 81}, {200, 150}, {97, 70}, {60, 131}}) {
    for (ResampleFilter filter : {ResampleFilter::kBicubic, ResampleFilter::kBilinear}) {
      const std::vector<uint8_t> full = ResizeAll(View(image), height, width, filter);
      const std::vector<uint8_t> part = ResizeWindow(View(image), height, width, window, filter, 1);
      ASSERT_EQ(part.size(), 40u * 50 * 3);
      for (int y = 0; y < 40; ++y) {
        for (int i = 0; i < 50 * 3; ++i) {
          ASSERT_EQ(part[y * 150 + i], full[(y + 7) * width * 3 + 11 * 3 + i])
              << height << "x" << width << " at " << y << "," << i;
        }
      }
    }
  }
}

TEST(ResampleTest, UnchangedSizeIsCopied) {
  const cv::Mat image = SmoothImage(30, 20, 1);
  const std::vector<uint8_t> out = ResizeAll(View(image), 30, 20, ResampleFilter::kBicubic);
  EXPECT_EQ(out, std::vector<uint8_t>(image.data, image.data + 600));
}

TEST(ResampleTest, PaddedRowsAreRespected) {
  const cv::Mat big = SmoothImage(40, 60, 3);
  const cv::Mat roi = big(cv::Rect(5, 3, 50, 30));  // rows keep big's stride
  const cv::Mat copy = roi.clone();
  EXPECT_EQ(ResizeAll(View(roi), 17, 23, ResampleFilter::kBicubic),
            ResizeAll(View(copy), 17, 23, ResampleFilter::kBicubic));
}

TEST(ResampleTest, ThreadsDoNotChangeTheResult) {
  const cv::Mat image = SmoothImage(1200, 1700, 3);
  const Window window{.top = 16, .left = 42, .height = 224, .width = 224};
  const PixelView src = View(image);
  EXPECT_EQ(ResizeWindow(src, 256, 362, window, ResampleFilter::kBicubic, 1),
            ResizeWindow(src, 256, 362, window, ResampleFilter::kBicubic, 2));
}

TEST(GeometryTest, ResizedShorterSideMatchesPythonInt) {
  EXPECT_EQ(ResizedShorterSide(224, 0.875f), 256);  // DeiT
  EXPECT_EQ(ResizedShorterSide(224, 0.9f), 248);    // Swin: int(248.89)
  EXPECT_EQ(ResizedShorterSide(224, 0.8f), 280);    // 0.8f alone would give 279
  EXPECT_EQ(ResizedShorterSide(224, 0.7f), 320);
  EXPECT_EQ(ResizedShorterSide(28, 1.0f), 28);
  EXPECT_EQ(ResizedShorterSide(384, 1.0f), 384);
}

TEST(GeometryTest, ResizedSizeKeepsAspectLikeTorchvision) {
  auto expect = [](ImageSize in, int64_t shorter, int64_t height, int64_t width) {
    const ImageSize out = ResizedSize(in, shorter);
    EXPECT_EQ(out.height, height) << in.height << "x" << in.width;
    EXPECT_EQ(out.width, width) << in.height << "x" << in.width;
  };
  expect({512, 512}, 256, 256, 256);
  expect({427, 640}, 256, 256, 383);  // int(256 * 640 / 427) = int(383.7)
  expect({640, 427}, 256, 383, 256);
  expect({300, 451}, 256, 256, 384);  // int(384.85)
  expect({872, 1000}, 256, 256, 293);
  expect({28, 28}, 28, 28, 28);
}

TEST(GeometryTest, CenterCropOffsetsRoundHalfToEven) {
  auto expect = [](ImageSize in, int64_t top, int64_t left) {
    const Window w = CenterCropWindow(in, 224);
    EXPECT_EQ(w.top, top) << in.height << "x" << in.width;
    EXPECT_EQ(w.left, left) << in.height << "x" << in.width;
    EXPECT_EQ(w.height, 224);
    EXPECT_EQ(w.width, 224);
  };
  expect({256, 256}, 16, 16);
  expect({256, 383}, 16, 80);  // round(79.5) = 80
  expect({256, 341}, 16, 58);  // round(58.5) = 58
  expect({256, 384}, 16, 80);
  expect({224, 224}, 0, 0);
  expect({225, 227}, 0, 2);  // round(0.5) = 0, round(1.5) = 2
}

}  // namespace
}  // namespace vitq::preprocessing
