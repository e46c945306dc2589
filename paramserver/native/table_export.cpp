// Moving rows in and out of the table: deltas for sync, row windows and admission counters
// for snapshots, bulk imports (restore, serving replicas), removal, and the table's statistics.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "embedding_table.hpp"
#include "table_guards.hpp"

namespace flywheel {

Delta EmbeddingTable::export_delta(bool with_slots) {
  SharedGuard guard(*this);
  std::vector<uint32_t> rows;
  Delta delta;
  {
    std::lock_guard<std::mutex> lock(changes_mu_);
    rows.swap(dirty_);
    delta.tombstones.swap(tombstones_);
  }
  const uint32_t width = with_slots ? store_.row_floats() : dim_;
  delta.ids.reserve(rows.size());
  delta.rows.reserve(rows.size() * width);
  for (uint32_t r : rows) {
    RowMeta &m = store_.meta(r);
    uint32_t flags = m.flags.fetch_and(~kDirty, std::memory_order_acq_rel);
    if (!(flags & kLive) || !(flags & kDirty)) continue;  // evicted, or already exported
    lock_row(r);
    const float *row = store_.row(r);
    delta.ids.push_back(m.id);
    delta.rows.insert(delta.rows.end(), row, row + width);
    unlock_row(r);
  }
  return delta;
}

RowBatch EmbeddingTable::export_rows(uint32_t start, uint32_t max_rows) const {
  SharedGuard guard(*this);
  RowBatch batch;
  const uint32_t width = store_.row_floats();
  uint32_t hw = store_.high_water();
  uint32_t end = uint32_t(std::min<uint64_t>(hw, uint64_t(start) + max_rows));
  for (uint32_t r = start; r < end; ++r) {
    const RowMeta &m = store_.meta(r);
    if (!(m.flags.load(std::memory_order_acquire) & kLive)) continue;
    lock_row(r);
    const float *row = store_.row(r);
    batch.ids.push_back(m.id);
    batch.rows.insert(batch.rows.end(), row, row + width);
    batch.updated.push_back(m.updated);
    unlock_row(r);
  }
  batch.next = end;
  return batch;
}

void EmbeddingTable::import_rows(const uint64_t *ids, size_t n, const float *rows, uint32_t width,
                                 const uint32_t *updated, uint32_t now, bool mark) {
  if (width != dim_ && width != store_.row_floats())
    throw std::invalid_argument("rows have width " + std::to_string(width) + "; expected dim " +
                                std::to_string(dim_) + " or full row " + std::to_string(store_.row_floats()));
  SharedGuard guard(*this);
  std::vector<uint32_t> dirtied;
  for (size_t i = 0; i < n; ++i) {
    uint32_t r;
    if (!index_.find(ids[i], r)) {
      r = store_.allocate();
      init_row(store_.row(r), ids[i]);
      RowMeta &m = store_.meta(r);
      m.id = ids[i];
      m.flags.store(kLive, std::memory_order_release);
      if (!index_.insert(ids[i], r)) {
        m.flags.store(0);
        store_.release(r);
        index_.find(ids[i], r);
      }
    }
    lock_row(r);
    std::memcpy(store_.row(r), rows + i * width, size_t(width) * sizeof(float));
    store_.meta(r).updated = updated ? updated[i] : now;
    unlock_row(r);
    if (mark) mark_dirty(r, dirtied);
  }
  publish_dirty(dirtied);
}

SketchState EmbeddingTable::export_sketch() const {
  SharedGuard guard(*this);
  SketchState state;
  if (!sketch_) return state;
  state.width = sketch_->width();
  state.depth = sketch_->depth();
  state.cells = sketch_->save();
  state.tracked = tracked_.load();
  return state;
}

void EmbeddingTable::import_sketch(uint32_t width, uint32_t depth, const uint32_t *cells, size_t n,
                                   uint64_t tracked) {
  if (!sketch_)
    throw std::invalid_argument("this table admits at once (admit_after 1) and keeps no admission sketch; "
                                "nothing to import the counters into");
  if (width != sketch_->width() || depth != sketch_->depth() || n != sketch_->cells())
    throw std::invalid_argument("admission counters of a " + std::to_string(width) + "x" + std::to_string(depth) +
                                " sketch (" + std::to_string(n) + " cells) do not fit this table's " +
                                std::to_string(sketch_->width()) + "x" + std::to_string(sketch_->depth()) +
                                " sketch; create the table with that sketch_width and sketch_depth");
  ExclusiveGuard guard(*this);
  sketch_->load(cells);
  tracked_ = tracked;
}

size_t EmbeddingTable::remove(const uint64_t *ids, size_t n) {
  ExclusiveGuard guard(*this);
  std::vector<uint64_t> gone;
  for (size_t i = 0; i < n; ++i) {
    uint32_t r;
    if (!index_.find(ids[i], r)) continue;
    index_.erase(ids[i]);
    store_.meta(r).flags.store(0, std::memory_order_release);
    store_.release(r);
    gone.push_back(ids[i]);
  }
  if (opt_.track_changes) {
    std::lock_guard<std::mutex> lock(changes_mu_);
    tombstones_.insert(tombstones_.end(), gone.begin(), gone.end());
  }
  return gone.size();
}

void EmbeddingTable::clear() {
  ExclusiveGuard guard(*this);
  index_.clear();
  store_.release_all();
  if (sketch_) sketch_->clear();
  std::lock_guard<std::mutex> lock(changes_mu_);
  dirty_.clear();
  tombstones_.clear();
  tracked_ = 0;
}

TableStats EmbeddingTable::stats() const {
  TableStats s{};
  s.rows = index_.size();
  s.capacity_rows = store_.capacity_rows();
  s.row_bytes = store_.bytes();
  // libcuckoo bucket: SLOT_PER_BUCKET x (key, value) storage + a partial-key byte and an
  // occupied flag per slot; plus its lock array (one cache line per lock).
  constexpr size_t slots = Index::slot_per_bucket();
  s.index_bytes = index_.bucket_count() * (slots * (sizeof(std::pair<const uint64_t, uint32_t>) + 2)) +
                  std::min<size_t>(index_.bucket_count(), 1u << 16) * 64;
  s.sketch_bytes = sketch_ ? sketch_->bytes() : 0;
  s.bytes = s.row_bytes + s.index_bytes + s.sketch_bytes;
  s.admitted = admitted_.load();
  s.evicted = evicted_.load();
  s.dropped_gradients = dropped_.load();
  s.tracked_ids = tracked_.load();
  s.load_factor = index_.load_factor();
  return s;
}

}  // namespace flywheel
