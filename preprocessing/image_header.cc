#include "preprocessing/image_header.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"

namespace vitq::preprocessing {
namespace {

absl::Status Malformed(absl::string_view format, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("cannot decode image: ", format, " ", what));
}

bool StartsWith(std::span<const uint8_t> bytes, absl::string_view prefix, size_t at = 0) {
  return bytes.size() >= at + prefix.size() &&
         std::memcmp(bytes.data() + at, prefix.data(), prefix.size()) == 0;
}

// Little- and big-endian unsigned reads; callers check `at + n <= size` first.
uint32_t ReadLe(std::span<const uint8_t> bytes, size_t at, int n) {
  uint32_t value = 0;
  for (int i = n - 1; i >= 0; --i) value = (value << 8) | bytes[at + i];
  return value;
}

uint32_t ReadBe(std::span<const uint8_t> bytes, size_t at, int n) {
  uint32_t value = 0;
  for (int i = 0; i < n; ++i) value = (value << 8) | bytes[at + i];
  return value;
}

absl::StatusOr<ImageHeader> Sized(ImageFormat format, int64_t width, int64_t height) {
  if (width <= 0 || height <= 0) {
    return Malformed(FormatName(format),
                     absl::StrCat("header declares an empty image (", width, "x", height, ")"));
  }
  return ImageHeader{format, width, height};
}

absl::StatusOr<ImageHeader> ReadPng(std::span<const uint8_t> bytes) {
  // Signature (8), IHDR chunk length (4) and type (4), width (4), height (4).
  if (bytes.size() < 24 || !StartsWith(bytes, "IHDR", 12)) {
    return Malformed("PNG", "header is truncated or has no IHDR chunk");
  }
  const uint32_t width = ReadBe(bytes, 16, 4);
  const uint32_t height = ReadBe(bytes, 20, 4);
  // The PNG spec caps both at 2^31 - 1.
  if (width > 0x7fffffffu || height > 0x7fffffffu) {
    return Malformed("PNG", "header declares a size above 2^31 - 1");
  }
  return Sized(ImageFormat::kPng, width, height);
}

// SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
bool IsStartOfFrame(uint8_t marker) {
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

// Walks the marker segments after SOI up to the first one accepted by `stop`
// (or SOS/EOI, where the headers end). Returns the offset of that marker's
// length field and the marker, or nullopt if the data ends first.
struct JpegMarker {
  size_t payload = 0;  // offset of the 2-byte segment length
  uint8_t marker = 0;
};

template <typename Stop>
std::optional<JpegMarker> FindJpegMarker(std::span<const uint8_t> bytes, Stop stop) {
  size_t pos = 2;  // after SOI
  while (pos < bytes.size()) {
    // libjpeg skips stray bytes between segments with a warning; so do we.
    while (pos < bytes.size() && bytes[pos] != 0xFF) ++pos;
    while (pos < bytes.size() && bytes[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= bytes.size()) break;
    const uint8_t marker = bytes[pos++];
    const bool standalone = marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7);
    if (standalone) continue;
    if (stop(marker) || marker == 0xDA || marker == 0xD9) return JpegMarker{pos, marker};
    if (pos + 2 > bytes.size()) break;
    const uint32_t length = ReadBe(bytes, pos, 2);  // includes its own 2 bytes
    if (length < 2) break;
    pos += length;
  }
  return std::nullopt;
}

absl::StatusOr<ImageHeader> ReadJpeg(std::span<const uint8_t> bytes) {
  const std::optional<JpegMarker> sof = FindJpegMarker(bytes, IsStartOfFrame);
  if (!sof.has_value()) return Malformed("JPEG", "data ends before the frame header");
  if (!IsStartOfFrame(sof->marker)) return Malformed("JPEG", "has no frame header before its scan");
  // Length (2), precision (1), height (2), width (2).
  if (sof->payload + 7 > bytes.size()) return Malformed("JPEG", "frame header is truncated");
  const uint32_t height = ReadBe(bytes, sof->payload + 3, 2);
  const uint32_t width = ReadBe(bytes, sof->payload + 5, 2);
  // Height 0 means "defined later by a DNL marker", which OpenCV does not support.
  return Sized(ImageFormat::kJpeg, width, height);
}

absl::StatusOr<ImageHeader> ReadBmp(std::span<const uint8_t> bytes) {
  // File header (14) then the info header, whose first field is its own size.
  if (bytes.size() < 18) return Malformed("BMP", "header is truncated");
  const uint32_t info_size = ReadLe(bytes, 14, 4);
  if (info_size == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit unsigned sizes
    if (bytes.size() < 22) return Malformed("BMP", "header is truncated");
    return Sized(ImageFormat::kBmp, ReadLe(bytes, 18, 2), ReadLe(bytes, 20, 2));
  }
  if (info_size < 40) return Malformed("BMP", "has an unknown info header");
  if (bytes.size() < 26) return Malformed("BMP", "header is truncated");
  const auto width = static_cast<int32_t>(ReadLe(bytes, 18, 4));
  // A negative height marks a top-down bitmap.
  const auto height = static_cast<int32_t>(ReadLe(bytes, 22, 4));
  return Sized(ImageFormat::kBmp, width, std::abs(static_cast<int64_t>(height)));
}

absl::StatusOr<ImageHeader> ReadWebp(std::span<const uint8_t> bytes) {
  // RIFF (4), size (4), WEBP (4), chunk type (4), chunk size (4), chunk data.
  if (bytes.size() < 30) return Malformed("WebP", "header is truncated");
  if (StartsWith(bytes, "VP8 ", 12)) {
    // Lossy: 3-byte frame tag, start code 9D 01 2A, then 14-bit sizes.
    if (ReadBe(bytes, 23, 3) != 0x9D012A) return Malformed("WebP", "VP8 frame has no start code");
    return Sized(ImageFormat::kWebp, ReadLe(bytes, 26, 2) & 0x3FFF, ReadLe(bytes, 28, 2) & 0x3FFF);
  }
  if (StartsWith(bytes, "VP8L", 12)) {
    // Lossless: signature 0x2F, then width - 1 and height - 1 in 14 bits each.
    if (bytes[20] != 0x2F) return Malformed("WebP", "VP8L stream has no signature");
    const uint32_t bits = ReadLe(bytes, 21, 4);
    return Sized(ImageFormat::kWebp, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1);
  }
  if (StartsWith(bytes, "VP8X", 12)) {
    // Extended: flags (4), then canvas width - 1 and height - 1 in 24 bits each.
    return Sized(ImageFormat::kWebp, ReadLe(bytes, 24, 3) + 1, ReadLe(bytes, 27, 3) + 1);
  }
  return Malformed("WebP", "has no VP8, VP8L or VP8X chunk");
}

}  // namespace

absl::string_view FormatName(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg:
      return "JPEG";
    case ImageFormat::kPng:
      return "PNG";
    case ImageFormat::kBmp:
      return "BMP";
    case ImageFormat::kWebp:
      return "WebP";
  }
  return "unknown";
}

absl::StatusOr<ImageHeader> ReadImageHeader(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return absl::InvalidArgumentError("cannot decode image: input is empty");
  if (StartsWith(bytes, "\x89PNG\r\n\x1a\n")) return ReadPng(bytes);
  if (StartsWith(bytes, "\xFF\xD8\xFF")) return ReadJpeg(bytes);
  if (StartsWith(bytes, "BM")) return ReadBmp(bytes);
  if (StartsWith(bytes, "RIFF") && StartsWith(bytes, "WEBP", 8)) return ReadWebp(bytes);
  return absl::InvalidArgumentError(
      "cannot decode image: unknown format (expected JPEG, PNG, BMP or WebP)");
}

absl::Status CheckJpegComplete(std::span<const uint8_t> bytes) {
  const auto is_scan = [](uint8_t marker) { return marker == 0xDA; };
  const std::optional<JpegMarker> scan = FindJpegMarker(bytes, is_scan);
  if (!scan.has_value() || scan->marker != 0xDA) {
    return Malformed("JPEG", "is truncated (no image data)");
  }
  // Entropy-coded data escapes every 0xFF (FF 00 or a restart marker), so FF D9
  // after the first scan can only be the end-of-image marker.
  constexpr std::array<uint8_t, 2> kEndOfImage = {0xFF, 0xD9};
  const auto rest = bytes.subspan(scan->payload);
  if (std::search(rest.begin(), rest.end(), kEndOfImage.begin(), kEndOfImage.end()) == rest.end()) {
    return Malformed("JPEG", "is truncated (no end-of-image marker)");
  }
  return absl::OkStatus();
}

}  // namespace vitq::preprocessing
