// Process-wide allocator settings for inference binaries.
#pragma once

namespace vitq {

// Makes glibc keep freed forward-pass buffers for the next pass instead of handing them back to
// the kernel: a model's per-pass temporaries (up to tens of MB at batch 8) are otherwise mmap'ed
// and munmap'ed, or trimmed, on every pass, and re-faulting their pages cost Swin-T W8A8 ~6% of
// its batch-8 time (docs/PERFORMANCE.md). Memory stays at the high-water mark of the largest
// batch, as a server's should. Call once, early in main(); a no-op on other C libraries.
void KeepFreedBuffersForReuse();

}  // namespace vitq
