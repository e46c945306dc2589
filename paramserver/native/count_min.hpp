// Admission filter: a count-min sketch of how often each not-yet-admitted ID was seen.
//
// depth rows of width 32-bit counters (conservative update, saturating); an ID's estimate is the minimum of its
// cells, which never undercounts, so an ID seen N times is always admitted and an ID seen
// fewer times is admitted only on collisions (the false-admission rate, measured by the
// benchmark). Memory is fixed: width * depth * 4 bytes, whatever the number of IDs.
// Snapshots carry the counters (save/load), so a restored table admits as the original would.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "hashing.hpp"

namespace flywheel {

class CountMinSketch {
 public:
  // How IDs map to cells (mix64, then cell_index below). Saved counters mean something only
  // to a sketch of the same layout, width and depth: bump this whenever either mapping changes.
  static constexpr uint32_t kLayout = 1;

  CountMinSketch(uint32_t width, uint32_t depth)
      : width_(std::max<uint32_t>(width, 1)), depth_(std::max<uint32_t>(depth, 1)),
        cells_(new std::atomic<uint32_t>[size_t(width_) * depth_]) {
    clear();
  }

  // Count one more sighting of id; return the new estimate of its count. Conservative
  // update: only cells at the current minimum are raised (to min + 1), which keeps the
  // estimate an upper bound while inflating other IDs' counts far less.
  uint32_t add(uint64_t id) {
    uint64_t h = mix64(id);
    uint32_t target = estimate_hashed(h);
    if (target != UINT32_MAX) ++target;
    for (uint32_t d = 0; d < depth_; ++d) {
      auto &cell = cells_[size_t(d) * width_ + cell_index(h, d)];
      uint32_t seen = cell.load(std::memory_order_relaxed);
      while (seen < target && !cell.compare_exchange_weak(seen, target, std::memory_order_relaxed)) {
      }
    }
    return target;
  }

  uint32_t estimate(uint64_t id) const { return estimate_hashed(mix64(id)); }

  uint32_t estimate_hashed(uint64_t h) const {
    uint32_t estimate = UINT32_MAX;
    for (uint32_t d = 0; d < depth_; ++d)
      estimate = std::min(estimate, cells_[size_t(d) * width_ + cell_index(h, d)].load(std::memory_order_relaxed));
    return estimate;
  }

  void clear() {
    for (size_t i = 0; i < cells(); ++i) cells_[i].store(0, std::memory_order_relaxed);
  }

  // Every counter, row-major (depth rows of width). Relaxed reads: an add racing the copy may
  // or may not be in it.
  std::vector<uint32_t> save() const {
    std::vector<uint32_t> out(cells());
    for (size_t i = 0; i < out.size(); ++i) out[i] = cells_[i].load(std::memory_order_relaxed);
    return out;
  }

  // Overwrite every counter with cells() values saved by a sketch of this layout and size.
  void load(const uint32_t *saved) {
    for (size_t i = 0; i < cells(); ++i) cells_[i].store(saved[i], std::memory_order_relaxed);
  }

  uint32_t width() const { return width_; }
  uint32_t depth() const { return depth_; }
  size_t cells() const { return size_t(width_) * depth_; }
  size_t bytes() const { return cells() * sizeof(uint32_t); }

 private:
  // Kirsch-Mitzenmacher: d-th hash = h1 + d * h2, from the two halves of one 64-bit mix.
  uint32_t cell_index(uint64_t h, uint32_t d) const {
    uint32_t h1 = static_cast<uint32_t>(h), h2 = static_cast<uint32_t>(h >> 32) | 1u;
    return static_cast<uint32_t>((uint64_t(h1) + uint64_t(d) * h2) % width_);
  }

  uint32_t width_, depth_;
  std::unique_ptr<std::atomic<uint32_t>[]> cells_;
};

}  // namespace flywheel
