// Labeled image datasets in IDX format (MNIST / Fashion-MNIST), shared by training
// (vitq-train), evaluation (vitq eval) and calibration (vitq quantize): one reader.
//
// A data spec names a split and an optional count:
//   fashion-mnist:train          all 60,000 training images
//   fashion-mnist:test:1000      the first 1,000 test images
//   idx:IMAGES.gz,LABELS.gz      any IDX pair (gzip or raw)
// Fashion-MNIST is read from Debian's dataset-fashion-mnist package
// (/usr/share/datasets/fashion-mnist), or from $VITQ_FASHION_MNIST_DIR when set.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace vitq::data {

struct LabeledImages {
  int64_t count = 0;
  int64_t height = 0;
  int64_t width = 0;
  std::vector<uint8_t> pixels;  // (count, height, width) grayscale, row-major
  std::vector<uint8_t> labels;  // (count)
  int64_t num_classes = 0;      // max label + 1, over the whole file even when a limit applies
  std::string source;           // the spec or paths it came from

  const uint8_t* image(int64_t i) const { return pixels.data() + i * height * width; }
};

// Reads an IDX image file (magic 0x00000803, uint8, 3 dims) and an IDX label file (magic
// 0x00000801, uint8, 1 dim); gzip-compressed files are detected and inflated (zlib).
// `limit` > 0 keeps the first `limit` examples (the whole file is still read and checked).
// INVALID_ARGUMENT for a wrong magic, truncated data or trailing bytes, mismatched counts, sizes
// outside 1..10,000,000 examples or 1..4096 pixels a side (checked from the headers, before
// allocating), or a corrupt gzip stream; NOT_FOUND for a missing file. Messages name the file.
absl::StatusOr<LabeledImages> ReadIdx(const std::string& images_path,
                                      const std::string& labels_path, int64_t limit = 0);

// Resolves a data spec (see above) and reads it. INVALID_ARGUMENT for an unknown form or a
// count that is not a positive integer; NOT_FOUND (with the package to install) when the
// Fashion-MNIST files are missing. A folder from $VITQ_FASHION_MNIST_DIR may hold the files
// gzip-compressed (FOO.gz) or not (FOO).
absl::StatusOr<LabeledImages> LoadDataset(const std::string& spec);

}  // namespace vitq::data
