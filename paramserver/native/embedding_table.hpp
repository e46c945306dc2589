// A collisionless embedding table: 64-bit feature ID -> its own row, never shared.
//
// libcuckoo's concurrent cuckoo hash map holds ID -> row number; rows (embedding followed by
// optimizer slots) live in slabs (row_store.hpp). Batch calls split across threads. Readers
// and writers share the table lock; eviction and clear take it exclusively in short batches,
// and a waiting writer stops new readers from starving it.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include <libcuckoo/cuckoohash_map.hh>

#include "count_min.hpp"
#include "hashing.hpp"
#include "huge_pages.hpp"
#include "optimizers.hpp"
#include "row_store.hpp"

namespace flywheel {

enum class InitKind : int { ZEROS = 0, UNIFORM = 1, NORMAL = 2 };

struct TableOptions {
  uint32_t dim = 8;
  OptimizerParams optimizer;
  InitKind init = InitKind::UNIFORM;
  float init_scale = 0.05f;       // uniform(-s, s) or normal(0, s)
  uint64_t seed = 0;
  uint32_t admit_after = 1;       // sightings before an ID gets a row (1: at once)
  uint32_t sketch_width = 1u << 20;
  uint32_t sketch_depth = 4;
  uint32_t ttl_seconds = 0;       // 0: rows never expire
  uint32_t slab_rows = 16384;
  uint32_t threads = 0;           // 0: all hardware threads
  bool track_changes = true;      // keep touched rows and tombstones for export_delta
  size_t expected_rows = 0;       // pre-size the index
  bool sort_batches = true;       // visit batch IDs in index order (cache locality)
};

struct TableStats {
  size_t rows, capacity_rows, row_bytes, index_bytes, sketch_bytes, bytes;
  uint64_t admitted, evicted, dropped_gradients, tracked_ids;
  double load_factor;
};

struct Delta {
  std::vector<uint64_t> ids;         // rows created or updated since the last export
  std::vector<float> rows;           // ids.size() x width, width = dim (or full row)
  std::vector<uint64_t> tombstones;  // IDs evicted or removed since the last export
};

struct SketchState {
  uint32_t width = 0, depth = 0;  // 0 x 0: the table admits at once and keeps no sketch
  std::vector<uint32_t> cells;    // depth rows of width admission counters
  uint64_t tracked = 0;           // IDs counted at least once (stats' tracked_ids)
};

struct RowBatch {
  std::vector<uint64_t> ids;
  std::vector<float> rows;           // full rows: embedding + slots
  std::vector<uint32_t> updated;
  uint32_t next = 0;                 // where the next chunk starts
};

class EmbeddingTable {
 public:
  explicit EmbeddingTable(const TableOptions &options);

  // out[n x dim] <- rows of ids; unknown or not-yet-admitted IDs read zeros. With insert,
  // each unknown ID is counted by the admission filter and gets a row once admitted.
  // Returns the number of rows created.
  size_t lookup(const uint64_t *ids, size_t n, float *out, bool insert, uint32_t now);

  // Apply grads[n x dim]; duplicate IDs are summed first; IDs without a row are dropped.
  // Throws std::invalid_argument (table unchanged) if any gradient is NaN or infinite.
  // Returns the number of distinct rows updated.
  size_t apply_gradients(const uint64_t *ids, size_t n, const float *grads, uint32_t now);

  // Remove rows not updated for more than ttl_seconds before now; returns how many.
  size_t evict(uint32_t now);

  Delta export_delta(bool with_slots);
  RowBatch export_rows(uint32_t start, uint32_t max_rows) const;
  // Insert or overwrite rows; width is dim (slots start fresh) or the full row width.
  void import_rows(const uint64_t *ids, size_t n, const float *rows, uint32_t width,
                   const uint32_t *updated, uint32_t now, bool mark_dirty);
  // The admission sketch's counters, for snapshots (empty without admission).
  SketchState export_sketch() const;
  // Replace the admission counters (restore into a fresh table). Throws std::invalid_argument,
  // table unchanged, if the table has no sketch or one of another width or depth.
  void import_sketch(uint32_t width, uint32_t depth, const uint32_t *cells, size_t n, uint64_t tracked);
  size_t remove(const uint64_t *ids, size_t n);
  void clear();

  TableStats stats() const;
  uint32_t dim() const { return dim_; }
  uint32_t row_floats() const { return store_.row_floats(); }

 private:
  class SharedGuard;
  class ExclusiveGuard;

  void grow_index(size_t incoming);
  std::vector<uint32_t> bucket_order(const uint64_t *ids, size_t begin, size_t end) const;
  // Initialise row r for id and publish it in the index; false if id already has a row.
  bool install_row(uint64_t id, uint32_t r, uint32_t now, std::vector<uint32_t> &dirtied);
  void init_row(float *row, uint64_t id) const;
  void mark_dirty(uint32_t r, std::vector<uint32_t> &dirtied);
  void publish_dirty(std::vector<uint32_t> &dirtied);
  void lock_row(uint32_t r) const;
  void unlock_row(uint32_t r) const;
  template <class F> void parallel_for(size_t n, F &&fn) const;

  const TableOptions opt_;
  const uint32_t dim_;
  using Index = libcuckoo::cuckoohash_map<uint64_t, uint32_t, IdHash, std::equal_to<uint64_t>,
                                          HugePageAllocator<std::pair<const uint64_t, uint32_t>>>;
  Index index_;
  RowStore store_;
  std::unique_ptr<CountMinSketch> sketch_;
  static constexpr uint32_t kStripes = 4096;
  mutable std::unique_ptr<std::atomic_flag[]> stripes_;

  mutable std::shared_mutex rw_;
  mutable std::atomic<int> writers_waiting_{0};

  std::mutex changes_mu_;
  std::vector<uint32_t> dirty_;
  std::vector<uint64_t> tombstones_;

  std::atomic<uint64_t> admitted_{0}, evicted_{0}, dropped_{0}, tracked_{0};
};

}  // namespace flywheel
