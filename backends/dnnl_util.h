// Shared oneDNN state: the CPU engine, a stream per calling thread, a per-thread
// scratchpad, and the name of the implementation a primitive runs.
//
// Primitives use a user-managed scratchpad so that one primitive may run from several
// server threads at once (the library-managed one is shared per primitive).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"

namespace vitq::dnnl_util {

dnnl::engine& Engine();
dnnl::stream& ThreadStream();

// A scratchpad memory for `pd`, reused per thread (grows on demand).
dnnl::memory ThreadScratchpad(const dnnl::primitive_desc_base& pd);

// Attributes every vitq primitive starts from (user scratchpad).
dnnl::primitive_attr BaseAttr();

// oneDNN's implementation string, e.g. "brg:avx512_core".
std::string ImplName(const dnnl::primitive_desc_base& pd);

// Plain row-major memory descriptor.
dnnl::memory::desc PlainDesc(const dnnl::memory::dims& dims, dnnl::memory::data_type dt);

}  // namespace vitq::dnnl_util
