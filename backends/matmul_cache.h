// LinearMatmul: the oneDNN matmul behind a Linear layer, y = x·Wᵀ (+ bias) with fused post-ops,
// shared by the float and integer kernels.
//
// One primitive per (row count M, accumulate) is created on first use, with the static
// attributes the kernel gives (scales and zero points must be fixed at creation: runtime ones
// drop oneDNN 2.6 off its brgemm kernels, ONEDNN.md). Weights are reordered once into each layout
// oneDNN asks for, and shared by every M that wants it. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "backends/linear.h"
#include "backends/quantize.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace vitq {

class LinearMatmul {
 public:
  struct Options {
    dnnl::memory::data_type src_type;
    dnnl::memory::data_type weight_type;
    int64_t n = 0, k = 0;
    Activation activation = Activation::kNone;
    // Adds kernel-specific static attributes (output scales, zero points) to every primitive.
    std::function<void(dnnl::primitive_attr&)> add_attributes;
  };
  // `weights`: (N, K) row-major in options.weight_type; `bias`: N floats or empty. Both are copied.
  LinearMatmul(Options options, const void* weights, std::vector<float> bias);

  // y (+)= matmul(src (m, K) in src_type); accumulate adds to y's contents (a sum post-op).
  void Run(const void* src, int64_t m, float* y, bool accumulate) const;
  // codes = the output (after the activation) quantized onto `grid`, in the epilogue:
  // clamp(round(y / grid.scale + grid.zero_point), 0, grid.qmax()) as u8.
  void RunToCodes(const void* src, int64_t m, const ActQuant& grid, uint8_t* codes) const;
  // codes = clamp(round(y[m, n] · column_scale[n]), −(2^(bits−1) − 1), 2^(bits−1) − 1) as s8, in
  // the epilogue (column_scale: N floats, a binary post-op's operand).
  void RunToSymmetricCodes(const void* src, int64_t m, const float* column_scale, int bits,
                           int8_t* codes) const;
  std::string Describe(int64_t m) const;  // oneDNN's implementation name for `m` rows

 private:
  struct Entry {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul prim;
    std::shared_ptr<dnnl::memory> weights;
    int column_scale_post_op = -1;  // index of the binary multiply by column_scale, if any
  };
  // One primitive per row count and output kind: f32, f32 accumulated, codes on a grid, or
  // symmetric codes scaled per column.
  struct Key {
    int64_t m;
    bool accumulate;
    int grid_bits;  // 0: f32 output
    float grid_scale;
    int32_t grid_zero_point;
    bool symmetric = false;  // s8 codes of grid_bits, scaled per column
    auto operator<=>(const Key&) const = default;
  };
  const Entry& EntryFor(const Key& key) const;
  void Execute(const Entry& e, const void* src, void* dst,
               const float* column_scale = nullptr) const;
  std::shared_ptr<dnnl::memory> WeightsIn(const dnnl::memory::desc& md) const;  // needs mu_

  Options options_;
  std::vector<uint8_t> plain_weights_;  // (N, K) row-major
  std::vector<float> bias_;
  mutable std::mutex mu_;
  mutable std::map<Key, Entry> entries_;  // guarded by mu_
  mutable std::vector<std::pair<dnnl::memory::desc, std::shared_ptr<dnnl::memory>>>
      weights_by_layout_;  // mu_
};

}  // namespace vitq
