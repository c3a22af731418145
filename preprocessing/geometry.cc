#include "preprocessing/geometry.h"

#include <cmath>

namespace vitq::preprocessing {
namespace {

// Python's round(d / 2.0) for d >= 0: exact halves go to the even neighbour.
int64_t HalfRoundedToEven(int64_t d) {
  const int64_t half = d / 2;
  if (d % 2 == 0) return half;
  return half % 2 == 0 ? half : half + 1;
}

}  // namespace

int64_t ResizedShorterSide(int64_t image_size, float crop_pct) {
  // Configs say 0.8; the float nearest to it is 0.800000012, and 224 divided by
  // that is 279.99999, not Python's 280. Back to the decimal the config meant.
  const double crop = std::round(static_cast<double>(crop_pct) * 1e6) / 1e6;
  return static_cast<int64_t>(static_cast<double>(image_size) / crop);
}

ImageSize ResizedSize(ImageSize image, int64_t shorter_side) {
  const bool portrait = image.width <= image.height;
  const int64_t short_side = portrait ? image.width : image.height;
  const int64_t long_side = portrait ? image.height : image.width;
  // Python's int(new_short * long / short): exact product, one rounded division.
  const auto new_long = static_cast<int64_t>(static_cast<double>(shorter_side * long_side) /
                                             static_cast<double>(short_side));
  return portrait ? ImageSize{new_long, shorter_side} : ImageSize{shorter_side, new_long};
}

Window CenterCropWindow(ImageSize image, int64_t crop) {
  return Window{.top = HalfRoundedToEven(image.height - crop),
                .left = HalfRoundedToEven(image.width - crop),
                .height = crop,
                .width = crop};
}

}  // namespace vitq::preprocessing
