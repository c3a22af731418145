#include "preprocessing/resample.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>

namespace vitq::preprocessing {
namespace {

// Pillow's PRECISION_BITS: 8 bits of pixel, 2 bits of headroom for the
// negative lobes and overshoot of the cubic kernel, in a 32-bit accumulator.
constexpr int kPrecisionBits = 32 - 8 - 2;

// Source rows transposed and filtered together by the horizontal pass: long
// enough for full vectors, short enough that a strip stays in L2.
constexpr int64_t kStripRows = 128;

// Accumulators per kernel call (4 KiB of int32, stays in L1).
constexpr int64_t kChunk = 1024;

// Below this many multiply-adds a pass runs on the calling thread: starting an
// OpenMP team costs tens of microseconds.
constexpr int64_t kMinParallelWork = int64_t{4} << 20;

// The kernels below mirror Pillow's expression by expression: the weights must
// round to the same fixed-point integers for the output to match bit for bit.
double BilinearKernel(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

double BicubicKernel(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Q22, rounded half away from zero (Pillow's normalize_coeffs_8bpc).
int32_t ToFixedPoint(double weight) {
  const double scaled = weight * (1 << kPrecisionBits);
  return static_cast<int32_t>(weight < 0 ? -0.5 + scaled : 0.5 + scaled);
}

int ThreadsFor(int64_t work, int num_threads) {
  if (work < kMinParallelWork || num_threads == 1) return 1;
  return num_threads > 0 ? num_threads : omp_get_max_threads();
}

template <typename F>
void ParallelFor(int64_t n, int threads, const F& body) {
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
  for (int64_t i = 0; i < n; ++i) body(i);
}

// out[i] = clip8(sum_t weights[t] * rows[t * row_stride + i]) for i < len <= kChunk.
// Compiled twice, baseline and AVX2, and picked at load time: the loops over i
// vectorize to widen-multiply-add on 8 (or 4) int32 lanes.
[[gnu::target_clones("avx2", "default")]] void WeightedRowSum(const uint8_t* rows,
                                                              int64_t row_stride,
                                                              const int32_t* weights, int32_t taps,
                                                              int64_t len, uint8_t* out) {
  int32_t acc[kChunk];
  for (int64_t i = 0; i < len; ++i) acc[i] = 1 << (kPrecisionBits - 1);  // rounds the shift
  for (int32_t t = 0; t < taps; ++t) {
    const uint8_t* row = rows + t * row_stride;
    const int32_t weight = weights[t];
    for (int64_t i = 0; i < len; ++i) acc[i] += row[i] * weight;
  }
  for (int64_t i = 0; i < len; ++i) {
    out[i] = static_cast<uint8_t>(std::clamp(acc[i] >> kPrecisionBits, 0, 255));
  }
}

// Output row `j` of a pass: a weighted sum of whole input rows of `len` bytes.
void ResampleRow(const uint8_t* in, int64_t in_stride, int64_t len, const PassWeights& pass,
                 int64_t j, uint8_t* out) {
  const uint8_t* first = in + pass.first_input[j] * in_stride;
  const int32_t* weights = &pass.weights[j * pass.max_taps];
  for (int64_t i = 0; i < len; i += kChunk) {
    WeightedRowSum(first + i, in_stride, weights, pass.taps[j], std::min(kChunk, len - i), out + i);
  }
}

// out(c, r) = in(r, c) over a (rows, cols) grid of kBytes-byte pixels, in
// blocks so that both sides stay in cache.
template <int kBytes>
void TransposePixels(const uint8_t* in, int64_t in_stride, int64_t rows, int64_t cols, uint8_t* out,
                     int64_t out_stride) {
  constexpr int64_t kBlock = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    const int64_t r1 = std::min(rows, r0 + kBlock);
    for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
      const int64_t c1 = std::min(cols, c0 + kBlock);
      for (int64_t c = c0; c < c1; ++c) {
        uint8_t* dst = out + c * out_stride;
        for (int64_t r = r0; r < r1; ++r) {
          std::memcpy(dst + r * kBytes, in + r * in_stride + c * kBytes, kBytes);
        }
      }
    }
  }
}

void Transpose(const uint8_t* in, int64_t in_stride, int64_t rows, int64_t cols, int64_t channels,
               uint8_t* out, int64_t out_stride) {
  if (channels == 1) {
    TransposePixels<1>(in, in_stride, rows, cols, out, out_stride);
  } else {
    TransposePixels<3>(in, in_stride, rows, cols, out, out_stride);
  }
}

// [first, last) range of input indices read by `pass`; shifts the pass to read
// from `first` on, so it can run on a buffer that holds only that range.
std::pair<int64_t, int64_t> RebaseToInputRange(PassWeights& pass) {
  int64_t first = pass.first_input.front();
  int64_t last = first;
  for (size_t j = 0; j < pass.taps.size(); ++j) {
    first = std::min(first, pass.first_input[j]);
    last = std::max(last, pass.first_input[j] + pass.taps[j]);
  }
  for (int64_t& index : pass.first_input) index -= first;
  return {first, last};
}

// Horizontal pass over source rows [y0, y1) for the window's columns:
// (y1 - y0, window.width, channels). Works strip by strip on a transposed copy
// so the filter runs along contiguous memory like the vertical pass.
std::vector<uint8_t> HorizontalPass(const PixelView& src, int64_t y0, int64_t y1,
                                    int64_t resized_width, const Window& window,
                                    ResampleFilter filter, int num_threads) {
  PassWeights pass =
      ComputePassWeights(src.width, resized_width, window.left, window.width, filter);
  const auto [x0, x1] = RebaseToInputRange(pass);
  const int64_t c = src.channels;
  const int64_t out_stride = window.width * c;
  std::vector<uint8_t> out((y1 - y0) * out_stride);
  const int64_t strips = (y1 - y0 + kStripRows - 1) / kStripRows;
  const int threads = ThreadsFor((y1 - y0) * out_stride * pass.max_taps, num_threads);
  ParallelFor(strips, threads, [&](int64_t s) {
    const int64_t r0 = y0 + s * kStripRows;
    const int64_t rows = std::min(kStripRows, y1 - r0);
    const int64_t len = rows * c;
    std::vector<uint8_t> transposed((x1 - x0) * len);  // (x1 - x0, rows, c)
    Transpose(src.data + r0 * src.row_stride + x0 * c, src.row_stride, rows, x1 - x0, c,
              transposed.data(), len);
    std::vector<uint8_t> filtered(window.width * len);  // (window.width, rows, c)
    for (int64_t j = 0; j < window.width; ++j) {
      ResampleRow(transposed.data(), len, len, pass, j, filtered.data() + j * len);
    }
    Transpose(filtered.data(), len, window.width, rows, c, out.data() + (r0 - y0) * out_stride,
              out_stride);
  });
  return out;
}

}  // namespace

PassWeights ComputePassWeights(int64_t in_size, int64_t out_size, int64_t first_output,
                               int64_t count, ResampleFilter filter) {
  const bool cubic = filter == ResampleFilter::kBicubic;
  const double scale = static_cast<double>(in_size) / out_size;
  // Downscaling widens the kernel by the scale factor: this is the antialiasing.
  const double filter_scale = std::max(scale, 1.0);
  const double support = (cubic ? 2.0 : 1.0) * filter_scale;
  const double inv_filter_scale = 1.0 / filter_scale;

  PassWeights pass;
  pass.max_taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  pass.first_input.resize(count);
  pass.taps.resize(count);
  pass.weights.assign(count * pass.max_taps, 0);
  std::vector<double> w(pass.max_taps);
  for (int64_t j = 0; j < count; ++j) {
    const double center = (first_output + j + 0.5) * scale;
    // + 0.5 then truncation, as Pillow rounds; a negative start clamps to 0 either way.
    const int64_t x_min = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t x_max = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size);
    const int64_t taps = x_max - x_min;
    double total = 0.0;
    for (int64_t x = 0; x < taps; ++x) {
      const double t = (x + x_min - center + 0.5) * inv_filter_scale;
      w[x] = cubic ? BicubicKernel(t) : BilinearKernel(t);
      total += w[x];
    }
    for (int64_t x = 0; x < taps; ++x) {
      const double normalized = total != 0.0 ? w[x] / total : w[x];
      pass.weights[j * pass.max_taps + x] = ToFixedPoint(normalized);
    }
    pass.first_input[j] = x_min;
    pass.taps[j] = static_cast<int32_t>(taps);
  }
  return pass;
}

std::vector<uint8_t> ResizeWindow(const PixelView& src, int64_t resized_height,
                                  int64_t resized_width, const Window& window,
                                  ResampleFilter filter, int num_threads) {
  const int64_t c = src.channels;
  const int64_t out_stride = window.width * c;
  const bool vertical = resized_height != src.height;

  // Source rows the vertical pass reads (just the window's rows without it).
  PassWeights vertical_pass;
  int64_t y0 = window.top;
  int64_t y1 = window.top + window.height;
  if (vertical) {
    vertical_pass =
        ComputePassWeights(src.height, resized_height, window.top, window.height, filter);
    std::tie(y0, y1) = RebaseToInputRange(vertical_pass);
  }

  // Intermediate image: source rows [y0, y1), the window's columns.
  std::vector<uint8_t> horizontal;
  const uint8_t* mid = nullptr;
  int64_t mid_stride = 0;
  if (resized_width != src.width) {
    horizontal = HorizontalPass(src, y0, y1, resized_width, window, filter, num_threads);
    mid = horizontal.data();
    mid_stride = out_stride;
  } else {
    mid = src.data + y0 * src.row_stride + window.left * c;
    mid_stride = src.row_stride;
  }

  std::vector<uint8_t> out(window.height * out_stride);
  if (!vertical) {
    for (int64_t j = 0; j < window.height; ++j) {
      std::memcpy(out.data() + j * out_stride, mid + j * mid_stride, out_stride);
    }
    return out;
  }
  const int threads = ThreadsFor(window.height * out_stride * vertical_pass.max_taps, num_threads);
  ParallelFor(window.height, threads, [&](int64_t j) {
    ResampleRow(mid, mid_stride, out_stride, vertical_pass, j, out.data() + j * out_stride);
  });
  return out;
}

}  // namespace vitq::preprocessing
