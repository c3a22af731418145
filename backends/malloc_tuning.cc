#include "backends/malloc_tuning.h"

#include <cstdlib>  // defines __GLIBC__ (through <features.h>) where glibc is the C library

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace vitq {

void KeepFreedBuffersForReuse() {
#if defined(__GLIBC__)
  // Blocks below 32 MiB (glibc's largest mmap threshold) come from the heap...
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  // ...and up to 1 GiB of free heap is kept rather than trimmed.
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

}  // namespace vitq
