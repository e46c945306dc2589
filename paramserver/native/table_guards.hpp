// The table lock's two guards (private to the table's implementation files).
#pragma once
#include <thread>

#include "embedding_table.hpp"

namespace flywheel {

// Readers share the table; a waiting writer (evict, clear, remove) holds new readers back.
class EmbeddingTable::SharedGuard {
 public:
  explicit SharedGuard(const EmbeddingTable &t) : t_(t) {
    while (t_.writers_waiting_.load(std::memory_order_acquire) > 0) std::this_thread::yield();
    t_.rw_.lock_shared();
  }
  ~SharedGuard() { t_.rw_.unlock_shared(); }

 private:
  const EmbeddingTable &t_;
};

class EmbeddingTable::ExclusiveGuard {
 public:
  explicit ExclusiveGuard(const EmbeddingTable &t) : t_(t) {
    t_.writers_waiting_.fetch_add(1, std::memory_order_acq_rel);
    t_.rw_.lock();
    t_.writers_waiting_.fetch_sub(1, std::memory_order_acq_rel);
  }
  ~ExclusiveGuard() { t_.rw_.unlock(); }

 private:
  const EmbeddingTable &t_;
};

}  // namespace flywheel
