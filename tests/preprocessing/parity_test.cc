// Parity with torchvision on real photographs (Debian's python3-skimage data).
//
// make_reference.py runs the DeiT/Swin evaluation transform (PIL open + convert,
// Resize(int(size / crop_pct), BICUBIC|BILINEAR), CenterCrop, ToTensor,
// Normalize) and writes the float32 tensors; ctest runs it first (fixture
// preprocessing_reference). Each case here preprocesses the same file bytes
// and compares element by element.
//
// Tolerance: exact match. We reproduce Pillow's integer resampler and the
// float32 ToTensor/Normalize arithmetic operation for operation, and OpenCV and
// PIL decode with the same system libpng and libjpeg-turbo (same IDCT, same
// chroma upsampling), so no step is allowed to differ, and on every case below,
// PNG and JPEG, every value is identical (max abs error 0). Any difference is a
// behaviour change worth a look, not noise. For scale: OpenCV's own
// INTER_CUBIC resize of the same photos differs by up to 1.5 (0.02-0.04 on
// average). Were OpenCV ever built against another JPEG decoder than PIL's,
// decoded pixels could differ by 1, moving outputs by about
// 1 / 255 / min(std) = 0.0175 (up to twice that where the cubic's negative
// lobes amplify), and JPEG cases would need that bound.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "preprocessing/image.h"

namespace vitq::preprocessing {
namespace {

constexpr double kMaxAbsError = 0.0;

std::string ReferenceDir() {
  if (const char* dir = std::getenv("VITQ_PREPROCESSING_REFERENCE_DIR")) return dir;
  return VITQ_PREPROCESSING_REFERENCE_DIR;  // where the ctest fixture writes
}

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

// "key value..." lines of make_reference.py's <case>.txt.
std::map<std::string, std::vector<std::string>> ReadFields(const std::string& path) {
  std::map<std::string, std::vector<std::string>> fields;
  std::ifstream file(path);
  std::string line;
  while (std::getline(file, line)) {
    std::istringstream words(line);
    std::string key;
    words >> key;
    std::vector<std::string>& values = fields[key];
    for (std::string value; words >> value;) values.push_back(value);
  }
  return fields;
}

std::vector<float> Floats(const std::vector<std::string>& values) {
  std::vector<float> out;
  for (const std::string& v : values) out.push_back(std::stof(v));
  return out;
}

struct Reference {
  std::string photo;
  PreprocessOptions options;
  std::vector<float> tensor;  // (C, H, W)
};

// Fails the test (returns false) if the fixture files are missing or inconsistent.
bool LoadReference(const std::string& name, Reference& ref) {
  const std::string base = ReferenceDir() + "/" + name;
  auto fields = ReadFields(base + ".txt");
  if (fields["photo"].size() != 1 || fields["shape"].size() != 3) {
    ADD_FAILURE()
        << "missing or malformed " << base << ".txt; run "
        << "tests/preprocessing/make_reference.py (ctest fixture preprocessing_reference)";
    return false;
  }
  ref.photo = fields["photo"][0];
  ref.options.channels = std::stoll(fields["channels"].at(0));
  ref.options.image_size = std::stoll(fields["image_size"].at(0));
  ref.options.crop_pct = std::stof(fields["crop_pct"].at(0));
  ref.options.interpolation = fields["interpolation"].at(0);
  ref.options.mean = Floats(fields["mean"]);
  ref.options.std = Floats(fields["std"]);
  const std::vector<uint8_t> raw = ReadBytes(base + ".bin");
  const size_t expected = ref.options.channels * ref.options.image_size * ref.options.image_size;
  if (raw.size() != expected * sizeof(float)) {
    ADD_FAILURE() << base << ".bin has " << raw.size() << " bytes, expected " << expected * 4;
    return false;
  }
  ref.tensor.resize(expected);
  std::memcpy(ref.tensor.data(), raw.data(), raw.size());  // little-endian like the host
  return true;
}

class ParityTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ParityTest, MatchesTorchvision) {
  Reference ref;
  ASSERT_TRUE(LoadReference(GetParam(), ref));
  const std::vector<uint8_t> bytes = ReadBytes(ref.photo);
  ASSERT_FALSE(bytes.empty()) << "cannot read " << ref.photo;

  std::vector<float> out;
  const absl::Status status = PreprocessImage(bytes, ref.options, out);
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(out.size(), ref.tensor.size());

  double max_abs = 0.0;
  double sum_abs = 0.0;
  int64_t differing = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double diff = std::abs(static_cast<double>(out[i]) - ref.tensor[i]);
    max_abs = std::max(max_abs, diff);
    sum_abs += diff;
    differing += diff != 0.0;
  }
  const double mean_abs = sum_abs / static_cast<double>(out.size());
  std::cout << "[ parity   ] " << GetParam() << ": max abs error " << max_abs << ", mean abs error "
            << mean_abs << ", " << differing << " of " << out.size() << " values differ\n";
  RecordProperty("max_abs_error", std::to_string(max_abs));
  RecordProperty("mean_abs_error", std::to_string(mean_abs));
  EXPECT_LE(max_abs, kMaxAbsError);
}

// Must match the CASES of make_reference.py.
INSTANTIATE_TEST_SUITE_P(Photos, ParityTest,
                         ::testing::Values("astronaut", "coffee", "chelsea", "rocket", "retina",
                                           "camera", "hubble_deep_field", "logo_rgba",
                                           "green_palette", "coffee_swin_crop", "coffee_bilinear",
                                           "chelsea_upscale", "chelsea_gray28", "rocket_gray28"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace vitq::preprocessing
