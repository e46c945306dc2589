// Row storage: fixed-size rows (embedding + optimizer slots) in contiguous slabs, with
// per-row metadata, a free list for rows returned by eviction, and a stable address for
// every row (slabs are never moved, so readers never see a reallocation).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "huge_pages.hpp"

namespace flywheel {

struct RowMeta {
  uint64_t id = 0;
  uint32_t updated = 0;                 // seconds since the epoch of the last update
  std::atomic<uint32_t> flags{0};       // kLive | kDirty
};

constexpr uint32_t kLive = 1u, kDirty = 2u;

class RowStore {
 public:
  static constexpr uint32_t kMaxSlabs = 1u << 16;

  RowStore(uint32_t row_floats, uint32_t slab_rows)
      : row_floats_(row_floats), slab_rows_(slab_rows),
        slabs_(new std::atomic<float *>[kMaxSlabs]), metas_(new std::atomic<RowMeta *>[kMaxSlabs]) {
    for (uint32_t i = 0; i < kMaxSlabs; ++i) {
      slabs_[i].store(nullptr, std::memory_order_relaxed);
      metas_[i].store(nullptr, std::memory_order_relaxed);
    }
  }
  ~RowStore() { release_all(); }
  RowStore(const RowStore &) = delete;
  RowStore &operator=(const RowStore &) = delete;

  float *row(uint32_t r) const {
    return slabs_[r / slab_rows_].load(std::memory_order_acquire) + size_t(r % slab_rows_) * row_floats_;
  }
  RowMeta &meta(uint32_t r) const { return metas_[r / slab_rows_].load(std::memory_order_acquire)[r % slab_rows_]; }

  // A free row: a recycled one if any, else the next one (allocating a slab when needed).
  uint32_t allocate() {
    std::lock_guard<std::mutex> lock(mu_);
    return allocate_locked();
  }

  // `count` free rows appended to `out`, under one lock (batch inserts).
  void allocate_many(size_t count, std::vector<uint32_t> &out) {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < count; ++i) out.push_back(allocate_locked());
  }

  void release(uint32_t r) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(r);
  }

  void release_many(const std::vector<uint32_t> &rows) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.insert(free_.end(), rows.begin(), rows.end());
  }

 private:
  uint32_t allocate_locked() {
    if (!free_.empty()) {
      uint32_t r = free_.back();
      free_.pop_back();
      return r;
    }
    uint32_t r = high_water_;
    uint32_t slab = r / slab_rows_;
    if (slab >= kMaxSlabs) throw std::length_error("embedding table is full (65536 slabs); raise slab_rows");
    if (r % slab_rows_ == 0 && slabs_[slab].load(std::memory_order_relaxed) == nullptr) {
      metas_[slab].store(new RowMeta[slab_rows_], std::memory_order_release);
      slabs_[slab].store(static_cast<float *>(huge_alloc(size_t(slab_rows_) * row_floats_ * sizeof(float))),
                         std::memory_order_release);
      ++slab_count_;
    }
    ++high_water_;
    return r;
  }

 public:

  // Rows ever handed out: every live row is below this.
  uint32_t high_water() const {
    std::lock_guard<std::mutex> lock(mu_);
    return high_water_;
  }

  size_t bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return size_t(slab_count_) * slab_rows_ * (row_floats_ * sizeof(float) + sizeof(RowMeta)) +
           free_.capacity() * sizeof(uint32_t);
  }
  size_t capacity_rows() const {
    std::lock_guard<std::mutex> lock(mu_);
    return size_t(slab_count_) * slab_rows_;
  }
  uint32_t row_floats() const { return row_floats_; }

  // Forget every row and free the slabs (callers hold the table's exclusive lock).
  void release_all() {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint32_t s = 0; s < slab_count_; ++s) {
      huge_free(slabs_[s].exchange(nullptr));
      delete[] metas_[s].exchange(nullptr);
    }
    slab_count_ = 0;
    high_water_ = 0;
    free_.clear();
    free_.shrink_to_fit();
  }

 private:
  const uint32_t row_floats_, slab_rows_;
  std::unique_ptr<std::atomic<float *>[]> slabs_;
  std::unique_ptr<std::atomic<RowMeta *>[]> metas_;
  mutable std::mutex mu_;
  std::vector<uint32_t> free_;
  uint32_t high_water_ = 0, slab_count_ = 0;
};

}  // namespace flywheel
