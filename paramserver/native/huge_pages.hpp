// Memory for large arrays (row slabs, the cuckoo index) backed by transparent huge pages
// where the kernel allows it (THP "madvise" mode): random row access over hundreds of MB
// otherwise pays a TLB miss per row.
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <new>

namespace flywheel {

constexpr size_t kHugePage = size_t(2) << 20;

// FLYWHEEL_HUGE_PAGES=0 turns the hint off (e.g. where THP defragmentation stalls faults).
inline bool huge_pages_wanted() {
  static const bool wanted = [] {
    const char *v = std::getenv("FLYWHEEL_HUGE_PAGES");
    return !(v && v[0] == '0');
  }();
  return wanted;
}

inline void *huge_alloc(size_t bytes) {
  if (bytes < kHugePage || !huge_pages_wanted()) {
    void *p = std::malloc(bytes ? bytes : 1);
    if (!p) throw std::bad_alloc();
    return p;
  }
  size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void *p = std::aligned_alloc(kHugePage, rounded);
  if (!p) throw std::bad_alloc();
  madvise(p, rounded, MADV_HUGEPAGE);  // a hint: ignored where THP is off
  return p;
}

inline void huge_free(void *p) { std::free(p); }

// std-style allocator over huge_alloc, for libcuckoo's bucket and lock arrays.
template <class T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() noexcept = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U> &) noexcept {}
  T *allocate(size_t n) { return static_cast<T *>(huge_alloc(n * sizeof(T))); }
  void deallocate(T *p, size_t) noexcept { huge_free(p); }
  template <class U>
  bool operator==(const HugePageAllocator<U> &) const noexcept { return true; }
  template <class U>
  bool operator!=(const HugePageAllocator<U> &) const noexcept { return false; }
};

}  // namespace flywheel
