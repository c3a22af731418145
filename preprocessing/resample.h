// Pillow-compatible image resizing (Image.resize, 8-bit path, Pillow 9.x).
//
// torchvision's Resize on a PIL image calls Pillow, which antialiases when
// shrinking: the filter support is widened by the scale factor so that every
// source pixel contributes. OpenCV's INTER_CUBIC/INTER_LINEAR sample a fixed
// 4x4/2x2 neighbourhood and alias when a photo shrinks to 256 px, so a model
// trained on torchvision inputs would see different numbers. This file
// reproduces Pillow's arithmetic exactly: the same double-precision weights,
// rounded to 22-bit fixed point, a horizontal pass then a vertical pass, the
// intermediate rounded and clipped to uint8.
//
// Only a window of the resized image is produced (the center crop). Each output
// pixel depends only on its own weights, so this equals resizing everything and
// cropping, while skipping the columns and rows the crop throws away.
//
// Speed: both passes run one vectorized kernel over contiguous rows (the
// horizontal pass works on a transposed copy of the source), dispatched to AVX2
// at run time when the CPU has it, and split across OpenMP threads for large
// images.
// Building block of PreprocessImage (image.h); exposed for tests.

#ifndef VITQ_PREPROCESSING_RESAMPLE_H_
#define VITQ_PREPROCESSING_RESAMPLE_H_

#include <cstdint>
#include <vector>

namespace vitq::preprocessing {

enum class ResampleFilter {
  kBilinear,  // triangle, support 1 (PIL.Image.BILINEAR)
  kBicubic,   // Keys cubic with a = -0.5, support 2 (PIL.Image.BICUBIC)
};

// An 8-bit image with interleaved channels; rows may be padded.
struct PixelView {
  const uint8_t* data = nullptr;
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;    // 1 or 3
  int64_t row_stride = 0;  // bytes from one row to the next, >= width * channels
};

// A rectangle in the coordinates of the resized image.
struct Window {
  int64_t top = 0;
  int64_t left = 0;
  int64_t height = 0;
  int64_t width = 0;
};

// Fixed-point weights of one resampling pass for a run of output positions,
// as Pillow's precompute_coeffs + normalize_coeffs_8bpc compute them.
struct PassWeights {
  std::vector<int64_t> first_input;  // per output: first source index read
  std::vector<int32_t> taps;         // per output: number of source indices read
  std::vector<int32_t> weights;      // (outputs, max_taps), Q22 fixed point
  int64_t max_taps = 0;
};

// Weights for outputs [first_output, first_output + count) of a resize from
// `in_size` to `out_size` samples.
PassWeights ComputePassWeights(int64_t in_size, int64_t out_size, int64_t first_output,
                               int64_t count, ResampleFilter filter);

// Resizes `src` to (resized_height, resized_width) and returns the pixels inside
// `window`: (window.height, window.width, src.channels) interleaved, equal to
// Pillow's. A dimension whose size does not change is not filtered (as in Pillow).
// Preconditions (checked by the caller): positive sizes, `window` inside the
// resized image. num_threads: 0 = OpenMP default, 1 = calling thread only;
// images below a few million multiply-adds always use the calling thread.
std::vector<uint8_t> ResizeWindow(const PixelView& src, int64_t resized_height,
                                  int64_t resized_width, const Window& window,
                                  ResampleFilter filter, int num_threads);

}  // namespace vitq::preprocessing

#endif  // VITQ_PREPROCESSING_RESAMPLE_H_
