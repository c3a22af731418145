// Safetensors reader (memory-mapped) and writer.
//
// File layout (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
// {string: string}}, then the raw tensor bytes. The reader checks every size and
// offset against the file before handing out a view, so a truncated or hostile file
// gives an error, never an out-of-bounds read.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backends/tensor.h"

namespace vitq {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

std::string DTypeName(DType dtype);  // "F32", ...
size_t DTypeSize(DType dtype);       // bytes per element
absl::StatusOr<DType> ParseDType(const std::string& name);

// A tensor inside a mapped file; valid while its SafetensorsFile lives.
struct TensorView {
  std::string name;
  DType dtype;
  Shape shape;
  std::span<const uint8_t> bytes;
};

class SafetensorsFile {
 public:
  // Maps `path` and validates the header. Errors name the file and the bad field.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Validates an in-memory file (used by tests and by Open).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBuffer(std::vector<uint8_t> buffer,
                                                                     std::string label);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  bool Has(const std::string& name) const { return tensors_.count(name) != 0; }
  // NOT_FOUND naming the tensor when absent.
  absl::StatusOr<TensorView> Get(const std::string& name) const;
  std::vector<std::string> Names() const;  // sorted
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Converts any float dtype (F64/F32/F16/BF16) to a float32 Tensor.
  absl::StatusOr<Tensor> ReadFloat(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  absl::Status Parse(std::span<const uint8_t> file);

  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<uint8_t> owned_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Converts a float view (F64/F32/F16/BF16) into float32 values.
absl::StatusOr<Tensor> ToFloatTensor(const TensorView& view);

// Collects tensors and metadata, then writes one file. Tensors are written in
// insertion order, each aligned to 8 bytes as the reference implementation does.
class SafetensorsWriter {
 public:
  void Add(const std::string& name, DType dtype, Shape shape, std::span<const uint8_t> bytes);
  void AddFloat(const std::string& name, const Tensor& tensor);
  void SetMetadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  std::vector<uint8_t> Serialize() const;
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace vitq
