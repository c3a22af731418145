#include "backends/malloc_tuning.h"

#include <gtest/gtest.h>

#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace vitq {
namespace {

#if defined(__GLIBC__)
// A 16 MB forward-pass buffer must come from the heap (glibc would mmap it by default) and stay
// there once freed, so that the next pass does not fault its pages in again.
TEST(MallocTuningTest, FreedPassBuffersStayInTheHeap) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's allocator replaces glibc's; the release build runs this";
#endif
  KeepFreedBuffersForReuse();
  constexpr size_t kBuffer = 16u << 20;
  const size_t mmapped_before = mallinfo2().hblkhd;
  void* buffer = std::malloc(kBuffer);
  ASSERT_NE(buffer, nullptr);
  EXPECT_EQ(mallinfo2().hblkhd, mmapped_before) << "the buffer was mmap'ed";
  std::free(buffer);
  EXPECT_GE(mallinfo2().fordblks, kBuffer) << "the freed buffer was returned to the kernel";
}
#endif

}  // namespace
}  // namespace vitq
