// Output sizes and crop offsets of torchvision's Resize(int) and CenterCrop,
// with its integer conversions and rounding, so that the same pixels are kept.
// Building block of PreprocessImage (image.h); exposed for tests.

#ifndef VITQ_PREPROCESSING_GEOMETRY_H_
#define VITQ_PREPROCESSING_GEOMETRY_H_

#include <cstdint>

#include "preprocessing/resample.h"

namespace vitq::preprocessing {

struct ImageSize {
  int64_t height = 0;
  int64_t width = 0;
};

// int(image_size / crop_pct), the target of the shorter side (timm's
// int(math.floor(img_size / crop_pct))). crop_pct is read with 6 decimals so
// 0.8f behaves like Python's 0.8. Requires image_size >= 1 and crop_pct > 0.
int64_t ResizedShorterSide(int64_t image_size, float crop_pct);

// Size after Resize(shorter_side): the shorter side becomes `shorter_side`, the
// longer one int(shorter_side * long / short) (_compute_resized_output_size).
ImageSize ResizedSize(ImageSize image, int64_t shorter_side);

// CenterCrop(crop) of an image at least crop x crop: offsets
// int(round((size - crop) / 2.0)) with Python's round-half-to-even.
Window CenterCropWindow(ImageSize image, int64_t crop);

}  // namespace vitq::preprocessing

#endif  // VITQ_PREPROCESSING_GEOMETRY_H_
