#include "backends/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace vitq {
namespace {

std::vector<uint8_t> FileWith(const std::string& header, size_t data_bytes) {
  std::string bytes(8 + header.size() + data_bytes, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(n >> (8 * i));
  bytes.replace(8, header.size(), header);
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

absl::Status ParseError(const std::string& header, size_t data_bytes) {
  return SafetensorsFile::FromBuffer(FileWith(header, data_bytes), "t.safetensors").status();
}

void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& phrase) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_NE(s.message().find(phrase), std::string::npos) << "message: " << s.message();
}

TEST(SafetensorsTest, RoundTripWithMetadata) {
  Tensor a({2, 3});
  for (int i = 0; i < 6; ++i) a.data()[i] = 0.5f * i;
  SafetensorsWriter w;
  w.AddFloat("a", a);
  const uint8_t bytes[] = {1, 2, 3};
  w.Add("packed", DType::kU8, {3}, bytes);
  w.SetMetadata("arch", "deit");
  auto file = SafetensorsFile::FromBuffer(w.Serialize(), "mem");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("arch"), "deit");
  auto back = (*file)->ReadFloat("a");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->shape(), (Shape{2, 3}));
  EXPECT_EQ(back->data()[5], 2.5f);
  auto packed = (*file)->Get("packed");
  ASSERT_TRUE(packed.ok());
  EXPECT_EQ(packed->dtype, DType::kU8);
  EXPECT_EQ(packed->bytes[2], 3);
}

TEST(SafetensorsTest, MappedFileRoundTrip) {
  const std::string path =
      (std::filesystem::temp_directory_path() / "vitq_st_test.safetensors").string();
  Tensor a({4});
  for (int i = 0; i < 4; ++i) a.data()[i] = i;
  SafetensorsWriter w;
  w.AddFloat("x", a);
  ASSERT_TRUE(w.WriteFile(path).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->ReadFloat("x")->data()[3], 3.0f);
  std::filesystem::remove(path);
}

TEST(SafetensorsTest, ConvertsHalfAndBfloat16) {
  // F16 0x3c00 = 1.0, 0xc000 = -2.0, 0x0001 = smallest subnormal; BF16 0x4049 ≈ 3.140625.
  const uint16_t f16[] = {0x3c00, 0xc000, 0x0001};
  const uint16_t bf16[] = {0x4049};
  SafetensorsWriter w;
  w.Add("h", DType::kF16, {3}, {reinterpret_cast<const uint8_t*>(f16), 6});
  w.Add("b", DType::kBF16, {1}, {reinterpret_cast<const uint8_t*>(bf16), 2});
  auto file = SafetensorsFile::FromBuffer(w.Serialize(), "mem");
  ASSERT_TRUE(file.ok());
  auto h = (*file)->ReadFloat("h");
  EXPECT_EQ(h->data()[0], 1.0f);
  EXPECT_EQ(h->data()[1], -2.0f);
  EXPECT_FLOAT_EQ(h->data()[2], 5.9604645e-8f);
  EXPECT_FLOAT_EQ((*file)->ReadFloat("b")->data()[0], 3.140625f);
}

TEST(SafetensorsTest, RejectsTruncatedFile) {
  SafetensorsWriter w;
  Tensor a({16});
  w.AddFloat("a", a);
  std::vector<uint8_t> bytes = w.Serialize();
  bytes.resize(bytes.size() - 10);
  ExpectError(SafetensorsFile::FromBuffer(bytes, "t").status(), absl::StatusCode::kInvalidArgument,
              "outside");
  ExpectError(SafetensorsFile::FromBuffer({1, 2, 3}, "t").status(),
              absl::StatusCode::kInvalidArgument, "truncated");
  bytes.resize(20);  // header cut
  ExpectError(SafetensorsFile::FromBuffer(bytes, "t").status(), absl::StatusCode::kInvalidArgument,
              "truncated");
}

TEST(SafetensorsTest, RejectsBadHeaderJson) {
  ExpectError(ParseError("{\"a\": [1, 2", 0), absl::StatusCode::kInvalidArgument,
              "not a valid JSON");
  ExpectError(ParseError("[1, 2]", 0), absl::StatusCode::kInvalidArgument,
              "not a valid JSON object");
  ExpectError(ParseError(R"({"a": {"dtype": "F32"}})", 0), absl::StatusCode::kInvalidArgument,
              "needs dtype, shape and data_offsets");
}

TEST(SafetensorsTest, RejectsUnknownDtypeAndBadShape) {
  ExpectError(ParseError(R"({"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}})", 1),
              absl::StatusCode::kInvalidArgument, "unsupported dtype 'Q4'");
  ExpectError(ParseError(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4),
              absl::StatusCode::kInvalidArgument, "negative");
}

TEST(SafetensorsTest, RejectsSizeMismatchAndOverlap) {
  ExpectError(ParseError(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", 4),
              absl::StatusCode::kInvalidArgument, "which needs 8");
  ExpectError(ParseError(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                             "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                         8),
              absl::StatusCode::kInvalidArgument, "overlap");
  ExpectError(ParseError(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8),
              absl::StatusCode::kInvalidArgument, "data_offsets");
}

TEST(SafetensorsTest, RejectsHugeHeaderLength) {
  std::vector<uint8_t> bytes(16, 0);
  bytes[7] = 0x7f;  // header length ~ 9e18
  ExpectError(SafetensorsFile::FromBuffer(bytes, "t").status(), absl::StatusCode::kInvalidArgument,
              "exceeds");
}

TEST(SafetensorsTest, ReadFloatRejectsIntegerDtype) {
  const uint8_t v[] = {1, 2};
  SafetensorsWriter w;
  w.Add("q", DType::kU8, {2}, v);
  auto file = SafetensorsFile::FromBuffer(w.Serialize(), "mem");
  ExpectError((*file)->ReadFloat("q").status(), absl::StatusCode::kInvalidArgument, "has dtype U8");
  ExpectError((*file)->Get("nope").status(), absl::StatusCode::kNotFound, "no tensor 'nope'");
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  ExpectError(SafetensorsFile::Open("/nonexistent/x.safetensors").status(),
              absl::StatusCode::kNotFound, "cannot open");
}

}  // namespace
}  // namespace vitq
