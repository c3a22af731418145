#include "backends/dnnl_util.h"

#include <vector>

#include "backends/tensor.h"

namespace vitq::dnnl_util {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& ThreadStream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

dnnl::memory ThreadScratchpad(const dnnl::primitive_desc_base& pd) {
  struct Buffer {
    std::unique_ptr<uint8_t[], AlignedDeleter> data;
    size_t size = 0;
  };
  thread_local Buffer buffer;
  dnnl::memory::desc md = pd.scratchpad_desc();
  size_t need = md.get_size();
  if (need > buffer.size) {
    buffer.data = AlignedArray<uint8_t>(need);
    buffer.size = need;
  }
  return dnnl::memory(md, Engine(), buffer.data.get());
}

dnnl::primitive_attr BaseAttr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

std::string ImplName(const dnnl::primitive_desc_base& pd) { return pd.impl_info_str(); }

dnnl::memory::desc PlainDesc(const dnnl::memory::dims& dims, dnnl::memory::data_type dt) {
  dnnl::memory::dims strides(dims.size());
  int64_t s = 1;
  for (size_t i = dims.size(); i-- > 0;) {
    strides[i] = s;
    s *= dims[i];
  }
  return dnnl::memory::desc(dims, dt, strides);
}

}  // namespace vitq::dnnl_util
