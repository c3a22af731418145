#include "backends/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

namespace vitq {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeToString(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

void AlignedDeleter::operator()(void* p) const { std::free(p); }

void* AlignedAlloc(size_t size_bytes) {
  constexpr size_t kAlign = 64;
  size_t rounded = (size_bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

Tensor::Tensor(Shape shape)
    : shape_(std::move(shape)),
      numel_(NumElements(shape_)),
      data_(AlignedArray<float>(static_cast<size_t>(numel_))) {}

Tensor Tensor::Zeros(Shape shape) {
  Tensor t(std::move(shape));
  std::memset(t.data(), 0, t.numel() * sizeof(float));
  return t;
}

Tensor Tensor::Clone() const {
  Tensor t(shape_);
  if (numel_) std::memcpy(t.data(), data(), numel_ * sizeof(float));
  return t;
}

void Tensor::Reshape(Shape shape) {
  if (NumElements(shape) != numel_) {
    throw std::logic_error("Tensor::Reshape " + ShapeToString(shape_) + " -> " +
                           ShapeToString(shape));
  }
  shape_ = std::move(shape);
}

}  // namespace vitq
