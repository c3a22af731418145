// Tensor: a dense, row-major, 64-byte aligned float32 array with a shape.
//
// The engine's activations are plain float tensors; quantized and bf16 data live
// inside the kernels that use them. Copying is explicit (Clone) so that a hidden
// copy of a large activation never happens by accident.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace vitq {

using Shape = std::vector<int64_t>;

// Number of elements of a shape (1 for a scalar shape {}).
int64_t NumElements(const Shape& shape);
std::string ShapeToString(const Shape& shape);

// Frees memory from AlignedAlloc.
struct AlignedDeleter {
  void operator()(void* p) const;
};
// 64-byte aligned, uninitialised storage for `count` objects of T.
template <typename T>
std::unique_ptr<T[], AlignedDeleter> AlignedArray(size_t count);
void* AlignedAlloc(size_t size_bytes);

template <typename T>
std::unique_ptr<T[], AlignedDeleter> AlignedArray(size_t count) {
  return std::unique_ptr<T[], AlignedDeleter>(static_cast<T*>(AlignedAlloc(count * sizeof(T))));
}

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised contents.
  explicit Tensor(Shape shape);
  static Tensor Zeros(Shape shape);

  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  Tensor Clone() const;

  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return numel_; }
  bool empty() const { return numel_ == 0; }

  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  std::span<float> span() { return {data_.get(), static_cast<size_t>(numel_)}; }
  std::span<const float> span() const { return {data_.get(), static_cast<size_t>(numel_)}; }

  // Same data, new shape with the same element count (checked).
  void Reshape(Shape shape);

 private:
  Shape shape_;
  int64_t numel_ = 0;
  std::unique_ptr<float[], AlignedDeleter> data_;
};

}  // namespace vitq
