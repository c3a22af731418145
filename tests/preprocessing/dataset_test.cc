#include "preprocessing/dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

namespace vitq::data {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Facts about Debian's Fashion-MNIST test split, read with numpy:
//   labels[:10], images[0].sum(), images[9999].sum(), np.bincount(labels)
constexpr uint8_t kFirstTestLabels[] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
constexpr int64_t kTestImage0Sum = 33456;
constexpr int64_t kTestImage9999Sum = 24390;

int64_t PixelSum(const LabeledImages& data, int64_t i) {
  const uint8_t* p = data.image(i);
  return std::accumulate(p, p + data.height * data.width, int64_t{0});
}

void PutBe32(std::vector<uint8_t>& bytes, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<uint8_t>(v >> shift));
}

// An IDX image file: `count` images of rows x cols whose pixels are (image + offset) % 256.
std::vector<uint8_t> ImagesIdx(uint32_t count, uint32_t rows, uint32_t cols,
                               uint32_t magic = 0x00000803) {
  std::vector<uint8_t> bytes;
  PutBe32(bytes, magic);
  PutBe32(bytes, count);
  PutBe32(bytes, rows);
  PutBe32(bytes, cols);
  for (uint32_t i = 0; i < count * rows * cols; ++i) {
    bytes.push_back(static_cast<uint8_t>(i / (rows * cols) + i % (rows * cols)));
  }
  return bytes;
}

// The 16-byte header of an IDX image file, without the pixels.
std::vector<uint8_t> ImagesHeader(uint32_t count, uint32_t rows, uint32_t cols) {
  std::vector<uint8_t> bytes;
  for (uint32_t v : {0x00000803u, count, rows, cols}) PutBe32(bytes, v);
  return bytes;
}

// An IDX label file holding `labels`.
std::vector<uint8_t> LabelsIdx(const std::vector<uint8_t>& labels, uint32_t magic = 0x00000801) {
  std::vector<uint8_t> bytes;
  PutBe32(bytes, magic);
  PutBe32(bytes, static_cast<uint32_t>(labels.size()));
  bytes.insert(bytes.end(), labels.begin(), labels.end());
  return bytes;
}

std::vector<uint8_t> Gzip(const std::vector<uint8_t>& raw) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
            Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, raw.size()));
  zs.next_in = const_cast<uint8_t*>(raw.data());
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           (std::string("vitq_dataset_") + info->name() + "_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::filesystem::remove_all(dir_);
    unsetenv("VITQ_FASHION_MNIST_DIR");
  }

  std::string Write(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
    return path;
  }

  // Writes the pair and expects ReadIdx to fail with `code` and a message holding `phrase`.
  void ExpectReadFails(const std::vector<uint8_t>& images, const std::vector<uint8_t>& labels,
                       absl::StatusCode code, const std::string& phrase) {
    const std::string images_path = Write("images.idx", images);
    const std::string labels_path = Write("labels.idx", labels);
    const absl::StatusOr<LabeledImages> data = ReadIdx(images_path, labels_path);
    ASSERT_FALSE(data.ok());
    EXPECT_EQ(data.status().code(), code) << data.status();
    EXPECT_THAT(std::string(data.status().message()), HasSubstr(phrase));
  }

  void ExpectSpecFails(const std::string& spec, absl::StatusCode code, const std::string& phrase) {
    const absl::StatusOr<LabeledImages> data = LoadDataset(spec);
    ASSERT_FALSE(data.ok()) << spec;
    EXPECT_EQ(data.status().code(), code) << spec << ": " << data.status();
    EXPECT_THAT(std::string(data.status().message()), HasSubstr(phrase)) << spec;
  }

  std::filesystem::path dir_;
};

TEST_F(DatasetTest, ReadsFashionMnistTestSplit) {
  const absl::StatusOr<LabeledImages> data = LoadDataset("fashion-mnist:test");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->count, 10000);
  EXPECT_EQ(data->height, 28);
  EXPECT_EQ(data->width, 28);
  EXPECT_EQ(data->num_classes, 10);
  EXPECT_EQ(data->pixels.size(), 10000u * 28 * 28);
  ASSERT_EQ(data->labels.size(), 10000u);
  EXPECT_TRUE(
      std::equal(std::begin(kFirstTestLabels), std::end(kFirstTestLabels), data->labels.begin()));
  EXPECT_EQ(PixelSum(*data, 0), kTestImage0Sum);
  EXPECT_EQ(PixelSum(*data, 9999), kTestImage9999Sum);
  std::vector<int> per_class(10);
  for (uint8_t label : data->labels) ++per_class[label];
  EXPECT_THAT(per_class, ::testing::Each(1000));  // the test split is balanced
  EXPECT_EQ(data->source, "fashion-mnist:test");
}

TEST_F(DatasetTest, CountSuffixKeepsThePrefix) {
  const absl::StatusOr<LabeledImages> data = LoadDataset("fashion-mnist:test:10");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->count, 10);
  EXPECT_EQ(data->pixels.size(), 10u * 28 * 28);
  EXPECT_TRUE(std::equal(std::begin(kFirstTestLabels), std::end(kFirstTestLabels),
                         data->labels.begin(), data->labels.end()));
  EXPECT_EQ(PixelSum(*data, 0), kTestImage0Sum);
  EXPECT_EQ(data->num_classes, 10);  // of the dataset, not of the prefix (which lacks 0, 3, 8)

  const absl::StatusOr<LabeledImages> train = LoadDataset("fashion-mnist:train:5");
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_THAT(train->labels, ElementsAre(9, 0, 0, 3, 0));

  const absl::StatusOr<LabeledImages> all = LoadDataset("fashion-mnist:test:20000");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->count, 10000);
}

TEST_F(DatasetTest, ReadsRawAndGzipIdxAlike) {
  const std::vector<uint8_t> images = ImagesIdx(3, 2, 5);
  const std::vector<uint8_t> labels = LabelsIdx({4, 0, 2});
  const std::string raw_images = Write("i.idx", images);
  const std::string raw_labels = Write("l.idx", labels);
  const std::string gz_images = Write("i.idx.gz", Gzip(images));
  const std::string gz_labels = Write("l.idx.gz", Gzip(labels));
  const absl::StatusOr<LabeledImages> raw = ReadIdx(raw_images, raw_labels);
  const absl::StatusOr<LabeledImages> gz = ReadIdx(gz_images, raw_labels);
  ASSERT_TRUE(raw.ok()) << raw.status();
  ASSERT_TRUE(gz.ok()) << gz.status();
  EXPECT_EQ(raw->count, 3);
  EXPECT_EQ(raw->height, 2);
  EXPECT_EQ(raw->width, 5);
  EXPECT_EQ(raw->num_classes, 5);
  EXPECT_THAT(raw->labels, ElementsAre(4, 0, 2));
  EXPECT_EQ(raw->pixels, std::vector<uint8_t>(images.begin() + 16, images.end()));
  EXPECT_EQ(gz->pixels, raw->pixels);
  EXPECT_EQ(gz->labels, raw->labels);

  const absl::StatusOr<LabeledImages> spec =
      LoadDataset("idx:" + gz_images + "," + gz_labels + ":2");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->count, 2);
  EXPECT_THAT(spec->labels, ElementsAre(4, 0));
  EXPECT_EQ(spec->num_classes, 5);
}

TEST_F(DatasetTest, ConcatenatedGzipMembersReadAsOneStream) {
  const std::vector<uint8_t> images = ImagesIdx(4, 3, 3);
  std::vector<uint8_t> two_members =
      Gzip(std::vector<uint8_t>(images.begin(), images.begin() + 20));
  const std::vector<uint8_t> second = Gzip(std::vector<uint8_t>(images.begin() + 20, images.end()));
  two_members.insert(two_members.end(), second.begin(), second.end());
  const absl::StatusOr<LabeledImages> data =
      ReadIdx(Write("i.gz", two_members), Write("l", LabelsIdx({1, 1, 1, 1})));
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->pixels, std::vector<uint8_t>(images.begin() + 16, images.end()));
}

TEST_F(DatasetTest, FashionMnistDirectoryFromEnvironment) {
  // Uncompressed files, as some mirrors ship them.
  Write("train-images-idx3-ubyte", ImagesIdx(2, 28, 28));
  Write("train-labels-idx1-ubyte", LabelsIdx({3, 1}));
  setenv("VITQ_FASHION_MNIST_DIR", dir_.c_str(), 1);
  const absl::StatusOr<LabeledImages> data = LoadDataset("fashion-mnist:train");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_THAT(data->labels, ElementsAre(3, 1));
  EXPECT_EQ(data->num_classes, 4);
  ExpectSpecFails("fashion-mnist:test", absl::StatusCode::kNotFound,
                  "apt-get install dataset-fashion-mnist");
}

TEST_F(DatasetTest, WrongMagic) {
  ExpectReadFails(LabelsIdx({1, 2}), LabelsIdx({1, 2}), absl::StatusCode::kInvalidArgument,
                  "bad magic 0x00000801 (an IDX label file); expected 0x00000803");
  ExpectReadFails(ImagesIdx(2, 2, 2), ImagesIdx(2, 2, 2), absl::StatusCode::kInvalidArgument,
                  "labels.idx: bad magic 0x00000803");
  ExpectReadFails(ImagesIdx(2, 2, 2, 0x00000d03), LabelsIdx({1, 2}),
                  absl::StatusCode::kInvalidArgument, "only element type 0x08 (uint8)");
  ExpectReadFails({'P', 'K', 3, 4, 0, 0, 0, 0}, LabelsIdx({1}), absl::StatusCode::kInvalidArgument,
                  "not an IDX file");
}

TEST_F(DatasetTest, TruncatedImages) {
  std::vector<uint8_t> images = ImagesIdx(3, 4, 4);
  images.resize(images.size() - 5);
  ExpectReadFails(images, LabelsIdx({0, 1, 2}), absl::StatusCode::kInvalidArgument,
                  "images.idx: truncated: expected 48 bytes of pixels (3 x 4 x 4) after the "
                  "16-byte header, found 43");
  ExpectReadFails(Gzip(images), LabelsIdx({0, 1, 2}), absl::StatusCode::kInvalidArgument,
                  "expected 48 bytes of pixels (3 x 4 x 4) after the 16-byte header, found 43");
  images.resize(10);  // inside the header
  ExpectReadFails(images, LabelsIdx({0, 1, 2}), absl::StatusCode::kInvalidArgument,
                  "truncated: expected a 16-byte IDX header, found 10 bytes");
  ExpectReadFails({}, LabelsIdx({0, 1, 2}), absl::StatusCode::kInvalidArgument, "found 0 bytes");
}

TEST_F(DatasetTest, TruncatedImagesAreCaughtWithALimit) {
  std::vector<uint8_t> images = ImagesIdx(3, 4, 4);
  images.resize(images.size() - 1);
  const absl::StatusOr<LabeledImages> data =
      ReadIdx(Write("i", images), Write("l", LabelsIdx({0, 1, 2})), /*limit=*/1);
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(std::string(data.status().message()), HasSubstr("expected 48 bytes"));
}

TEST_F(DatasetTest, TruncatedLabels) {
  std::vector<uint8_t> labels = LabelsIdx({0, 1, 2});
  labels.pop_back();
  ExpectReadFails(ImagesIdx(3, 2, 2), labels, absl::StatusCode::kInvalidArgument,
                  "labels.idx: truncated: expected 3 bytes of labels (3) after the 8-byte "
                  "header, found 2");
}

TEST_F(DatasetTest, TrailingBytes) {
  std::vector<uint8_t> images = ImagesIdx(2, 2, 2);
  images.push_back(0);
  ExpectReadFails(images, LabelsIdx({0, 1}), absl::StatusCode::kInvalidArgument,
                  "images.idx: trailing data: expected 8 bytes");
  std::vector<uint8_t> labels = LabelsIdx({0, 1});
  labels.push_back(7);
  ExpectReadFails(ImagesIdx(2, 2, 2), Gzip(labels), absl::StatusCode::kInvalidArgument,
                  "labels.idx: trailing data");
}

TEST_F(DatasetTest, CountMismatch) {
  ExpectReadFails(ImagesIdx(3, 2, 2), LabelsIdx({0, 1}), absl::StatusCode::kInvalidArgument,
                  "count mismatch");
  ExpectReadFails(ImagesIdx(3, 2, 2), LabelsIdx({0, 1}), absl::StatusCode::kInvalidArgument,
                  "holds 3 images but");
}

TEST_F(DatasetTest, CorruptGzipStream) {
  std::vector<uint8_t> gz = Gzip(ImagesIdx(20, 8, 8));
  gz[10] |= 0x06;  // the first deflate block (after the 10-byte gzip header) gets type 3, reserved
  ExpectReadFails(gz, LabelsIdx(std::vector<uint8_t>(20, 1)), absl::StatusCode::kInvalidArgument,
                  "images.idx: corrupt gzip stream: invalid block type");

  std::vector<uint8_t> cut = Gzip(ImagesIdx(20, 8, 8));
  cut.resize(cut.size() / 2);
  ExpectReadFails(cut, LabelsIdx(std::vector<uint8_t>(20, 1)), absl::StatusCode::kInvalidArgument,
                  "corrupt gzip stream: the compressed data ends early");

  std::vector<uint8_t> bad_crc = Gzip(ImagesIdx(20, 8, 8));
  bad_crc[bad_crc.size() - 6] ^= 1;  // in the CRC-32 trailer
  ExpectReadFails(bad_crc, LabelsIdx(std::vector<uint8_t>(20, 1)),
                  absl::StatusCode::kInvalidArgument, "corrupt gzip stream: incorrect data check");
}

TEST_F(DatasetTest, InsaneSizesAreRejectedFromTheHeader) {
  const std::vector<uint8_t> labels = LabelsIdx({0, 1, 2});
  ExpectReadFails(ImagesHeader(3, 0, 28), labels, absl::StatusCode::kInvalidArgument,
                  "image size 0 x 28 is outside [1, 4096]");
  ExpectReadFails(ImagesHeader(3, 28, 5000), labels, absl::StatusCode::kInvalidArgument,
                  "image size 28 x 5000 is outside [1, 4096]");
  ExpectReadFails(ImagesHeader(20'000'000, 28, 28), labels, absl::StatusCode::kInvalidArgument,
                  "example count 20000000 is outside [1, 10000000]");
  ExpectReadFails(ImagesHeader(0, 28, 28), LabelsIdx({}), absl::StatusCode::kInvalidArgument,
                  "example count 0");
}

TEST_F(DatasetTest, HugeHeaderOnATinyFileFailsWithoutAllocatingIt) {
  // 10M images of 4096 x 4096 (1.6e14 bytes) claimed by a few bytes of gzip.
  std::vector<uint8_t> labels;
  PutBe32(labels, 0x00000801);
  PutBe32(labels, 10'000'000);
  ExpectReadFails(Gzip(ImagesHeader(10'000'000, 4096, 4096)), labels,
                  absl::StatusCode::kInvalidArgument,
                  "truncated: expected 167772160000000 bytes of pixels");
}

TEST_F(DatasetTest, BadSpecs) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  for (const char* spec : {"", "mnist:train", "fashion-mnist", "cifar10:test"}) {
    ExpectSpecFails(spec, kInvalid,
                    "accepted forms: fashion-mnist:train[:N], fashion-mnist:test[:N], "
                    "idx:IMAGES,LABELS[:N]");
  }
  ExpectSpecFails("fashion-mnist:valid", kInvalid, "unknown split 'valid'");
  for (const char* spec : {"fashion-mnist:test:0", "fashion-mnist:test:-5",
                           "fashion-mnist:test:", "fashion-mnist:test:1e3",
                           "fashion-mnist:train: 7", "fashion-mnist:test:99999999999999999999"}) {
    ExpectSpecFails(spec, kInvalid, "is not a positive integer");
  }
  ExpectSpecFails("idx:only-one-file.gz", kInvalid, "expected idx:IMAGES,LABELS[:N]");
  ExpectSpecFails("idx:a.gz,b.gz:ten", kInvalid, "count 'ten' is not a positive integer");
}

TEST_F(DatasetTest, MissingFile) {
  const std::string labels = Write("labels.idx", LabelsIdx({0}));
  const absl::StatusOr<LabeledImages> data = ReadIdx("/nonexistent/images.gz", labels);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(data.status().message()),
              AllOf(HasSubstr("/nonexistent/images.gz"), HasSubstr("cannot open")));

  setenv("VITQ_FASHION_MNIST_DIR", dir_.c_str(), 1);
  ExpectSpecFails("fashion-mnist:test:5", absl::StatusCode::kNotFound,
                  (dir_ / "t10k-images-idx3-ubyte.gz").string());
  ExpectSpecFails("fashion-mnist:train", absl::StatusCode::kNotFound,
                  "apt-get install dataset-fashion-mnist");
}

}  // namespace
}  // namespace vitq::data
