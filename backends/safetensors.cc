#include "backends/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "backends/bf16.h"

namespace vitq {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // as the reference reader

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {{DType::kF64, "F64", 8}, {DType::kF32, "F32", 4},
                                 {DType::kF16, "F16", 2}, {DType::kBF16, "BF16", 2},
                                 {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
                                 {DType::kI16, "I16", 2}, {DType::kI8, "I8", 1},
                                 {DType::kU8, "U8", 1},   {DType::kBool, "BOOL", 1}};

float HalfToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

absl::StatusOr<Shape> ParseShape(const nlohmann::json& j, const std::string& name) {
  if (!j.is_array())
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': shape is not an array"));
  Shape shape;
  for (const auto& d : j) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': shape has a non-integer or negative dimension"));
    }
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

}  // namespace

std::string DTypeName(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.name;
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.size;
  }
  return 0;
}

absl::StatusOr<DType> ParseDType(const std::string& name) {
  for (const auto& d : kDTypes) {
    if (name == d.name) return d.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype '", name, "'"));
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_size_ = static_cast<size_t>(st.st_size);
  if (file->map_size_ > 0) {
    void* p = ::mmap(nullptr, file->map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
    }
    file->map_ = p;
  }
  ::close(fd);
  auto bytes = std::span<const uint8_t>(static_cast<const uint8_t*>(file->map_), file->map_size_);
  if (absl::Status s = file->Parse(bytes); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  }
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBuffer(
    std::vector<uint8_t> buffer, std::string label) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = std::move(label);
  file->owned_ = std::move(buffer);
  if (absl::Status s = file->Parse(file->owned_); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(file->path_, ": ", s.message()));
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

absl::Status SafetensorsFile::Parse(std::span<const uint8_t> file) {
  if (file.size() < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("truncated: ", file.size(), " bytes, a safetensors file has at least 8"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file[i];
  if (header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("header length ", header_len, " exceeds the ",
                                                   kMaxHeaderBytes, "-byte limit"));
  }
  if (header_len > file.size() - 8) {
    return absl::InvalidArgumentError(absl::StrCat("truncated: header says ", header_len,
                                                   " bytes but only ", file.size() - 8, " follow"));
  }
  const char* header_begin = reinterpret_cast<const char*>(file.data() + 8);
  nlohmann::json header = nlohmann::json::parse(header_begin, header_begin + header_len, nullptr,
                                                /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::InvalidArgumentError("header is not a valid JSON object");
  }
  std::span<const uint8_t> data = file.subspan(8 + header_len);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return absl::InvalidArgumentError("__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat("__metadata__ value '", key, "' is not a string"));
        }
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets") || !entry["dtype"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': entry needs dtype, shape and data_offsets"));
    }
    absl::StatusOr<DType> dtype = ParseDType(entry["dtype"].get<std::string>());
    if (!dtype.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': ", dtype.status().message()));
    absl::StatusOr<Shape> shape = ParseShape(entry["shape"], name);
    if (!shape.ok()) return shape.status();
    const auto& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': data_offsets must be two unsigned integers"));
    }
    uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    if (begin > end || end > data.size()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': data_offsets [", begin,
                                                     ", ", end, ") outside the ", data.size(),
                                                     "-byte data section (truncated file?)"));
    }
    // Overflow-safe element count.
    uint64_t expected = DTypeSize(*dtype);
    for (int64_t d : *shape) {
      if (d != 0 && expected > (uint64_t{1} << 62) / static_cast<uint64_t>(d)) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': shape too large"));
      }
      expected *= static_cast<uint64_t>(d);
    }
    if (end - begin != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", name, "': ", end - begin, " bytes for shape ", ShapeToString(*shape), " of ",
          DTypeName(*dtype), " which needs ", expected));
    }
    ranges.emplace_back(begin, end);
    tensors_[name] = TensorView{name, *dtype, *shape, data.subspan(begin, end - begin)};
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return absl::InvalidArgumentError("tensor data ranges overlap");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorView> SafetensorsFile::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  }
  return it->second;
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) names.push_back(name);
  return names;
}

absl::StatusOr<Tensor> SafetensorsFile::ReadFloat(const std::string& name) const {
  absl::StatusOr<TensorView> view = Get(name);
  if (!view.ok()) return view.status();
  return ToFloatTensor(*view);
}

absl::StatusOr<Tensor> ToFloatTensor(const TensorView& view) {
  Tensor out(view.shape);
  const uint8_t* src = view.bytes.data();
  const int64_t n = out.numel();
  float* dst = out.data();
  switch (view.dtype) {
    case DType::kF32:
      if (n) std::memcpy(dst, src, n * 4);
      break;
    case DType::kF64:
      for (int64_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        dst[i] = static_cast<float>(d);
      }
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = HalfToFloat(h);
      }
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = Bf16ToFloat(h);
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", view.name, "' has dtype ", DTypeName(view.dtype),
                       ", expected a float dtype (F32, F16, BF16, F64)"));
  }
  return out;
}

void SafetensorsWriter::Add(const std::string& name, DType dtype, Shape shape,
                            std::span<const uint8_t> bytes) {
  entries_.push_back(Entry{name, dtype, std::move(shape), {bytes.begin(), bytes.end()}});
}

void SafetensorsWriter::AddFloat(const std::string& name, const Tensor& tensor) {
  auto bytes = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(tensor.data()),
                                        tensor.numel() * sizeof(float));
  Add(name, DType::kF32, tensor.shape(), bytes);
}

std::vector<uint8_t> SafetensorsWriter::Serialize() const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const Entry& e : entries_) {
    header[e.name] = {{"dtype", DTypeName(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.bytes.size()}}};
    offset += e.bytes.size();
  }
  std::string text = header.dump();
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');  // align the data section
  std::vector<uint8_t> out;
  out.reserve(8 + text.size() + offset);
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), text.begin(), text.end());
  for (const Entry& e : entries_) out.insert(out.end(), e.bytes.begin(), e.bytes.end());
  return out;
}

absl::Status SafetensorsWriter::WriteFile(const std::string& path) const {
  std::vector<uint8_t> bytes = Serialize();
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for writing"));
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(path, ": rename failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace vitq
