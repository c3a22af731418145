#include "preprocessing/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace vitq::data {
namespace {

// IDX: two zero bytes, an element-type byte, a dimension count, one big-endian uint32 per
// dimension, then the elements, row-major. Only uint8 (0x08) is accepted: every MNIST-style set.
constexpr uint32_t kImagesMagic = 0x00000803;  // uint8, 3 dims (count, rows, cols)
constexpr uint32_t kLabelsMagic = 0x00000801;  // uint8, 1 dim (count)
constexpr uint32_t kUint8Type = 0x08;
// Sanity bounds, checked before anything is allocated from a header's numbers.
constexpr int64_t kMaxCount = 10'000'000;
constexpr int64_t kMaxSide = 4096;

constexpr char kDefaultFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";
constexpr char kFashionMnistDirEnv[] = "VITQ_FASHION_MNIST_DIR";
constexpr char kAcceptedSpecs[] =
    "fashion-mnist:train[:N], fashion-mnist:test[:N], idx:IMAGES,LABELS[:N]";

absl::Status Invalid(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// The bytes of an IDX file in order, inflated on the fly when the file is gzip-compressed, so
// that the header is validated before the (possibly huge) body is allocated. Concatenated gzip
// members read as one stream, as with gunzip.
class IdxStream {
 public:
  // NOT_FOUND when `path` does not exist.
  static absl::StatusOr<std::unique_ptr<IdxStream>> Open(const std::string& path) {
    FilePtr file(std::fopen(path.c_str(), "rb"));
    if (file == nullptr) {
      const int error = errno;
      const std::string message = absl::StrCat(path, ": cannot open: ", std::strerror(error));
      if (error == ENOENT) return absl::NotFoundError(message);
      return absl::InvalidArgumentError(message);
    }
    std::unique_ptr<IdxStream> stream(new IdxStream(path, std::move(file)));
    if (absl::Status s = stream->DetectGzip(); !s.ok()) return s;
    return stream;
  }

  ~IdxStream() {
    if (gzip_) inflateEnd(&zs_);
  }
  IdxStream(const IdxStream&) = delete;
  IdxStream& operator=(const IdxStream&) = delete;

  const std::string& path() const { return path_; }

  // Fills `out`; returns the bytes written, fewer than out.size() only at the end of the data.
  // INVALID_ARGUMENT for read errors and corrupt or truncated gzip data.
  absl::StatusOr<size_t> Read(std::span<uint8_t> out) {
    return gzip_ ? Inflate(out) : ReadRaw(out);
  }

  // Reads and discards what is left; returns its length, counting at most `cap` bytes (no point
  // inflating a gzip bomb to the end to say how long it is).
  absl::StatusOr<int64_t> Skip(int64_t cap) {
    std::vector<uint8_t> scratch(1 << 16);
    int64_t total = 0;
    while (total < cap) {
      const auto want = static_cast<size_t>(std::min<int64_t>(scratch.size(), cap - total));
      absl::StatusOr<size_t> got = Read(std::span<uint8_t>(scratch.data(), want));
      if (!got.ok()) return got.status();
      total += static_cast<int64_t>(*got);
      if (*got < want) break;
    }
    return total;
  }

 private:
  static constexpr size_t kInBufferSize = size_t{1} << 18;

  IdxStream(std::string path, FilePtr file) : path_(std::move(path)), file_(std::move(file)) {}

  absl::Status ReadError() const {
    return Invalid(path_, absl::StrCat("read error: ", std::strerror(errno)));
  }

  // gzip starts with 1f 8b, IDX with 00 00: one never passes for the other.
  absl::Status DetectGzip() {
    const size_t got = std::fread(peek_.data(), 1, peek_.size(), file_.get());
    if (std::ferror(file_.get())) return ReadError();
    peek_size_ = got;
    gzip_ = got == 2 && peek_[0] == 0x1f && peek_[1] == 0x8b;
    if (!gzip_) return absl::OkStatus();
    // 16 + MAX_WBITS: a gzip wrapper, whose header and CRC-32 trailer zlib checks.
    if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) {
      gzip_ = false;  // nothing for the destructor to end
      return absl::ResourceExhaustedError(absl::StrCat(path_, ": cannot initialise zlib"));
    }
    in_buffer_ = std::make_unique<uint8_t[]>(kInBufferSize);
    std::copy(peek_.begin(), peek_.end(), in_buffer_.get());
    zs_.next_in = in_buffer_.get();
    zs_.avail_in = static_cast<uInt>(peek_.size());
    return absl::OkStatus();
  }

  absl::StatusOr<size_t> ReadRaw(std::span<uint8_t> out) {
    // The bytes DetectGzip looked at come first.
    size_t done = std::min(out.size(), peek_size_ - peek_used_);
    std::copy_n(peek_.begin() + peek_used_, done, out.begin());
    peek_used_ += done;
    done += std::fread(out.data() + done, 1, out.size() - done, file_.get());
    if (std::ferror(file_.get())) return ReadError();
    return done;
  }

  absl::StatusOr<size_t> Inflate(std::span<uint8_t> out) {
    // zlib counts in 32-bit uInt and an IDX body may be larger: fill `out` in slices.
    size_t done = 0;
    while (done < out.size()) {
      const size_t slice = std::min<size_t>(out.size() - done, std::numeric_limits<uInt>::max());
      zs_.next_out = out.data() + done;
      zs_.avail_out = static_cast<uInt>(slice);
      if (absl::Status s = InflateSome(); !s.ok()) return s;
      done += slice - zs_.avail_out;
      if (zs_.avail_out > 0) break;  // InflateSome stops short only at the end of the data
    }
    return done;
  }

  // Inflates into zs_.next_out until it is full or the compressed data has ended.
  absl::Status InflateSome() {
    while (zs_.avail_out > 0 && !finished_) {
      if (zs_.avail_in == 0) {
        zs_.avail_in =
            static_cast<uInt>(std::fread(in_buffer_.get(), 1, kInBufferSize, file_.get()));
        zs_.next_in = in_buffer_.get();
        if (std::ferror(file_.get())) return ReadError();
        if (zs_.avail_in == 0) {
          if (member_done_) {
            finished_ = true;
            break;
          }
          return Invalid(path_, "corrupt gzip stream: the compressed data ends early (truncated)");
        }
      }
      if (member_done_) {
        inflateReset(&zs_);  // another gzip member follows
        member_done_ = false;
      }
      const int rc = inflate(&zs_, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) {
        member_done_ = true;
      } else if (rc == Z_MEM_ERROR) {
        return absl::ResourceExhaustedError(absl::StrCat(path_, ": zlib is out of memory"));
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        return Invalid(path_, absl::StrCat("corrupt gzip stream: ",
                                           zs_.msg != nullptr ? zs_.msg : "invalid data"));
      }
    }
    return absl::OkStatus();
  }

  std::string path_;
  FilePtr file_;
  bool gzip_ = false;
  std::array<uint8_t, 2> peek_{};  // the first bytes, read to detect gzip
  size_t peek_size_ = 0;
  size_t peek_used_ = 0;
  // gzip only:
  z_stream zs_{};
  std::unique_ptr<uint8_t[]> in_buffer_;
  bool member_done_ = false;  // the current gzip member has ended; another may follow
  bool finished_ = false;     // the compressed file has ended
};

struct IdxHeader {
  std::vector<int64_t> dims;
  int64_t size_bytes = 0;
};

// What a magic number is, for a file given in the wrong place (labels as images, say).
std::string DescribeMagic(uint32_t magic) {
  if (magic == kImagesMagic) return "an IDX image file";
  if (magic == kLabelsMagic) return "an IDX label file";
  if ((magic >> 16) == 0) {
    return absl::StrFormat("IDX element type 0x%02x, %d dimensions", (magic >> 8) & 0xff,
                           magic & 0xff);
  }
  return "not an IDX file";
}

// Reads the magic and the big-endian dimension sizes; the magic must be `expected_magic`.
absl::StatusOr<IdxHeader> ReadHeader(IdxStream& stream, uint32_t expected_magic,
                                     absl::string_view kind) {
  const int ndims = static_cast<int>(expected_magic & 0xff);
  IdxHeader header;
  header.size_bytes = 4 + 4 * ndims;
  std::vector<uint8_t> bytes(static_cast<size_t>(header.size_bytes));
  const auto truncated = [&](size_t found) {
    return Invalid(stream.path(), absl::StrCat("truncated: expected a ", header.size_bytes,
                                               "-byte IDX header, found ", found, " bytes"));
  };
  absl::StatusOr<size_t> got = stream.Read(std::span<uint8_t>(bytes.data(), 4));
  if (!got.ok()) return got.status();
  if (*got < 4) return truncated(*got);
  const auto be32 = [&](size_t at) {
    return (uint32_t{bytes[at]} << 24) | (uint32_t{bytes[at + 1]} << 16) |
           (uint32_t{bytes[at + 2]} << 8) | bytes[at + 3];
  };
  const uint32_t magic = be32(0);
  if (magic != expected_magic) {
    std::string why = absl::StrFormat("bad magic 0x%08x (%s); expected 0x%08x for IDX %s", magic,
                                      DescribeMagic(magic), expected_magic, kind);
    if ((magic >> 16) == 0 && ((magic >> 8) & 0xff) != kUint8Type) {
      absl::StrAppend(&why, "; only element type 0x08 (uint8) is supported");
    }
    return Invalid(stream.path(), why);
  }
  got = stream.Read(std::span<uint8_t>(bytes).subspan(4));
  if (!got.ok()) return got.status();
  if (4 + *got < bytes.size()) return truncated(4 + *got);
  for (int d = 0; d < ndims; ++d) header.dims.push_back(be32(4 + 4 * d));
  return header;
}

absl::Status CheckCount(const IdxStream& stream, int64_t count) {
  if (count < 1 || count > kMaxCount) {
    return Invalid(stream.path(),
                   absl::StrCat("example count ", count, " is outside [1, ", kMaxCount, "]"));
  }
  return absl::OkStatus();
}

// Reads the body of `stream`, `total` bytes after the header, keeping the first `keep` in `out`
// (unspecified after an error). The rest is read too, so truncation and trailing bytes are
// caught even when only a prefix is kept.
absl::Status ReadBody(IdxStream& stream, const IdxHeader& header, int64_t total, int64_t keep,
                      absl::string_view what, std::vector<uint8_t>& out) {
  // The buffer doubles as data arrives instead of being sized from the header: a small gzip file
  // whose header claims terabytes fails as truncated without claiming the memory first.
  constexpr int64_t kFirstChunkBytes = int64_t{1} << 20;
  out.clear();
  int64_t found = 0;
  while (found < keep) {
    const int64_t chunk = std::min(keep - found, std::max(found, kFirstChunkBytes));
    out.resize(static_cast<size_t>(found + chunk));
    absl::StatusOr<size_t> got =
        stream.Read(std::span<uint8_t>(out.data() + found, static_cast<size_t>(chunk)));
    if (!got.ok()) return got.status();
    found += static_cast<int64_t>(*got);
    if (static_cast<int64_t>(*got) < chunk) break;
  }
  if (found == keep) {
    // Up to one byte more than the file should hold: enough to tell "too long".
    absl::StatusOr<int64_t> rest = stream.Skip(total - keep + 1);
    if (!rest.ok()) return rest.status();
    found += *rest;
  }
  const std::string expected = absl::StrCat("expected ", total, " bytes of ", what, " after the ",
                                            header.size_bytes, "-byte header");
  if (found < total) {
    return Invalid(stream.path(), absl::StrCat("truncated: ", expected, ", found ", found));
  }
  if (found > total) {
    return Invalid(stream.path(), absl::StrCat("trailing data: ", expected, ", found more"));
  }
  return absl::OkStatus();
}

bool Exists(const std::string& path) {
  FilePtr f(std::fopen(path.c_str(), "rb"));
  return f != nullptr;
}

// The Debian package ships gzip files; a folder given by the environment may hold them
// uncompressed, as some mirrors distribute them.
std::string FashionMnistFile(const std::string& dir, absl::string_view stem) {
  const std::string gz = absl::StrCat(dir, "/", stem, ".gz");
  const std::string raw = absl::StrCat(dir, "/", stem);
  return !Exists(gz) && Exists(raw) ? raw : gz;
}

// The ":N" of a spec: a positive decimal integer.
absl::StatusOr<int64_t> ParseCount(const std::string& spec, absl::string_view text) {
  const bool digits = !text.empty() && std::all_of(text.begin(), text.end(), absl::ascii_isdigit);
  int64_t n = 0;
  if (!digits || !absl::SimpleAtoi(text, &n) || n < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset spec '", spec, "': count '", text, "' is not a positive integer"));
  }
  return n;
}

// rest: "train", "test", "train:N" or "test:N".
absl::StatusOr<LabeledImages> LoadFashionMnist(const std::string& spec, absl::string_view rest) {
  const size_t colon = rest.find(':');
  const absl::string_view split = rest.substr(0, colon);
  int64_t limit = 0;
  if (colon != absl::string_view::npos) {
    absl::StatusOr<int64_t> n = ParseCount(spec, rest.substr(colon + 1));
    if (!n.ok()) return n.status();
    limit = *n;
  }
  if (split != "train" && split != "test") {
    return absl::InvalidArgumentError(absl::StrCat("dataset spec '", spec, "': unknown split '",
                                                   split, "'; accepted forms: ", kAcceptedSpecs));
  }
  const absl::string_view prefix = split == "train" ? "train" : "t10k";
  const char* env_dir = std::getenv(kFashionMnistDirEnv);
  const std::string dir =
      env_dir != nullptr && env_dir[0] != '\0' ? env_dir : kDefaultFashionMnistDir;
  absl::StatusOr<LabeledImages> data =
      ReadIdx(FashionMnistFile(dir, absl::StrCat(prefix, "-images-idx3-ubyte")),
              FashionMnistFile(dir, absl::StrCat(prefix, "-labels-idx1-ubyte")), limit);
  if (absl::IsNotFound(data.status())) {
    return absl::NotFoundError(absl::StrCat(data.status().message(),
                                            " (Fashion-MNIST: apt-get install "
                                            "dataset-fashion-mnist, or set ",
                                            kFashionMnistDirEnv, " to a folder of its IDX files)"));
  }
  if (data.ok()) data->source = spec;
  return data;
}

// rest: "IMAGES,LABELS" or "IMAGES,LABELS:N" (the count follows the last ':').
absl::StatusOr<LabeledImages> LoadIdxPair(const std::string& spec, absl::string_view rest) {
  const size_t comma = rest.find(',');
  if (comma == absl::string_view::npos || comma == 0 || comma + 1 == rest.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset spec '", spec,
                     "': expected idx:IMAGES,LABELS[:N]; accepted forms: ", kAcceptedSpecs));
  }
  absl::string_view labels = rest.substr(comma + 1);
  int64_t limit = 0;
  if (const size_t colon = labels.rfind(':'); colon != absl::string_view::npos) {
    absl::StatusOr<int64_t> n = ParseCount(spec, labels.substr(colon + 1));
    if (!n.ok()) return n.status();
    limit = *n;
    labels = labels.substr(0, colon);
  }
  absl::StatusOr<LabeledImages> data =
      ReadIdx(std::string(rest.substr(0, comma)), std::string(labels), limit);
  if (data.ok()) data->source = spec;
  return data;
}

}  // namespace

absl::StatusOr<LabeledImages> ReadIdx(const std::string& images_path,
                                      const std::string& labels_path, int64_t limit) {
  if (limit < 0) return absl::InvalidArgumentError(absl::StrCat("negative limit ", limit));
  absl::StatusOr<std::unique_ptr<IdxStream>> images = IdxStream::Open(images_path);
  if (!images.ok()) return images.status();
  absl::StatusOr<std::unique_ptr<IdxStream>> labels = IdxStream::Open(labels_path);
  if (!labels.ok()) return labels.status();
  absl::StatusOr<IdxHeader> image_header = ReadHeader(**images, kImagesMagic, "images");
  if (!image_header.ok()) return image_header.status();
  absl::StatusOr<IdxHeader> label_header = ReadHeader(**labels, kLabelsMagic, "labels");
  if (!label_header.ok()) return label_header.status();

  // Every size is checked here, before a body is allocated.
  const int64_t count = image_header->dims[0];
  const int64_t rows = image_header->dims[1];
  const int64_t cols = image_header->dims[2];
  if (absl::Status s = CheckCount(**images, count); !s.ok()) return s;
  if (rows < 1 || rows > kMaxSide || cols < 1 || cols > kMaxSide) {
    return Invalid(images_path, absl::StrCat("image size ", rows, " x ", cols, " is outside [1, ",
                                             kMaxSide, "]"));
  }
  if (label_header->dims[0] != count) {
    return absl::InvalidArgumentError(absl::StrCat("count mismatch: ", images_path, " holds ",
                                                   count, " images but ", labels_path, " holds ",
                                                   label_header->dims[0], " labels"));
  }

  LabeledImages data;
  data.count = limit > 0 ? std::min(limit, count) : count;
  data.height = rows;
  data.width = cols;
  data.source = absl::StrCat(images_path, ",", labels_path);
  if (absl::Status s =
          ReadBody(**images, *image_header, count * rows * cols, data.count * rows * cols,
                   absl::StrCat("pixels (", count, " x ", rows, " x ", cols, ")"), data.pixels);
      !s.ok()) {
    return s;
  }
  // All labels are read (they are small) so that num_classes is the dataset's, even for a prefix
  // that happens to miss the last class.
  if (absl::Status s = ReadBody(**labels, *label_header, count, count,
                                absl::StrCat("labels (", count, ")"), data.labels);
      !s.ok()) {
    return s;
  }
  data.num_classes = *std::max_element(data.labels.begin(), data.labels.end()) + 1;
  data.labels.resize(static_cast<size_t>(data.count));
  return data;
}

absl::StatusOr<LabeledImages> LoadDataset(const std::string& spec) {
  absl::string_view rest = spec;
  if (absl::ConsumePrefix(&rest, "fashion-mnist:")) return LoadFashionMnist(spec, rest);
  if (absl::ConsumePrefix(&rest, "idx:")) return LoadIdxPair(spec, rest);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dataset spec '", spec, "'; accepted forms: ", kAcceptedSpecs));
}

}  // namespace vitq::data
