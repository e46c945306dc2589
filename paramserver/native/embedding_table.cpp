#include "embedding_table.hpp"
#include "table_guards.hpp"

#include <algorithm>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>

namespace flywheel {

namespace {
constexpr size_t kParallelMin = 2048;  // below this a second thread costs more than it saves
constexpr size_t kEvictChunk = 4096;   // rows removed per exclusive section

bool all_finite(const float *x, size_t n, size_t *bad) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, 4);
    if ((bits & 0x7f800000u) == 0x7f800000u) {
      *bad = i;
      return false;
    }
  }
  return true;
}
}  // namespace

EmbeddingTable::EmbeddingTable(const TableOptions &options)
    : opt_(options), dim_(options.dim),
      store_(options.dim * (1 + options.optimizer.slots()), std::max<uint32_t>(options.slab_rows, 1)),
      stripes_(new std::atomic_flag[kStripes]) {
  if (dim_ == 0) throw std::invalid_argument("dim must be positive");
  if (opt_.admit_after > 1) sketch_ = std::make_unique<CountMinSketch>(opt_.sketch_width, opt_.sketch_depth);
  for (uint32_t i = 0; i < kStripes; ++i) stripes_[i].clear();
  if (opt_.expected_rows) index_.reserve(opt_.expected_rows * 2);  // load factor <= 0.5 when full
}

void EmbeddingTable::lock_row(uint32_t r) const {
  while (stripes_[r % kStripes].test_and_set(std::memory_order_acquire)) {
  }
}
void EmbeddingTable::unlock_row(uint32_t r) const { stripes_[r % kStripes].clear(std::memory_order_release); }

template <class F>
void EmbeddingTable::parallel_for(size_t n, F &&fn) const {
  unsigned hw = opt_.threads ? opt_.threads : std::max(1u, std::thread::hardware_concurrency());
  size_t workers = n >= kParallelMin ? std::min<size_t>(hw, n / (kParallelMin / 2)) : 1;
  if (workers <= 1) {
    fn(size_t(0), n, size_t(0));
    return;
  }
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(workers);
  size_t step = (n + workers - 1) / workers;
  for (size_t w = 1; w < workers; ++w) {
    threads.emplace_back([&, w] {
      try {
        fn(w * step, std::min(n, (w + 1) * step), w);
      } catch (...) {
        errors[w] = std::current_exception();
      }
    });
  }
  try {
    fn(size_t(0), std::min(n, step), size_t(0));
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto &t : threads) t.join();
  for (auto &e : errors)
    if (e) std::rethrow_exception(e);
}

void EmbeddingTable::init_row(float *row, uint64_t id) const {
  RowRng rng(opt_.seed, id);
  switch (opt_.init) {
    case InitKind::ZEROS:
      std::fill(row, row + dim_, 0.0f);
      break;
    case InitKind::UNIFORM:
      for (uint32_t i = 0; i < dim_; ++i) row[i] = (2.0f * rng.uniform() - 1.0f) * opt_.init_scale;
      break;
    case InitKind::NORMAL:
      for (uint32_t i = 0; i < dim_; ++i) row[i] = rng.normal() * opt_.init_scale;
      break;
  }
  opt_.optimizer.init_slots(row, dim_);
}

void EmbeddingTable::mark_dirty(uint32_t r, std::vector<uint32_t> &dirtied) {
  if (!opt_.track_changes) return;
  if (!(store_.meta(r).flags.fetch_or(kDirty, std::memory_order_acq_rel) & kDirty)) dirtied.push_back(r);
}

void EmbeddingTable::publish_dirty(std::vector<uint32_t> &dirtied) {
  if (dirtied.empty()) return;
  std::lock_guard<std::mutex> lock(changes_mu_);
  dirty_.insert(dirty_.end(), dirtied.begin(), dirtied.end());
  dirtied.clear();
}

void EmbeddingTable::grow_index(size_t incoming) {
  // Cuckoo inserts slow down sharply near a full table (long displacement paths) and
  // libcuckoo only grows when one fails; keep the load factor under kMaxLoad instead.
  constexpr double kMaxLoad = 0.75;
  size_t want = index_.size() + incoming;
  if (double(want) > kMaxLoad * double(index_.capacity())) index_.reserve(size_t(double(want) / 0.5));
}

bool EmbeddingTable::install_row(uint64_t id, uint32_t r, uint32_t now, std::vector<uint32_t> &dirtied) {
  init_row(store_.row(r), id);
  RowMeta &m = store_.meta(r);
  m.id = id;
  m.updated = now;
  m.flags.store(kLive, std::memory_order_release);
  if (!index_.insert(id, r)) {
    m.flags.store(0, std::memory_order_release);
    return false;
  }
  admitted_.fetch_add(1, std::memory_order_relaxed);
  mark_dirty(r, dirtied);
  return true;
}

std::vector<uint32_t> EmbeddingTable::bucket_order(const uint64_t *ids, size_t begin, size_t end) const {
  // Visit IDs grouped by the region of the index their primary bucket lies in (a counting
  // sort on the top bits of the bucket number): consecutive finds then touch neighbouring
  // buckets and locks, which the hardware prefetcher streams, instead of one random cache
  // miss after another. The bucket number is our hash masked by libcuckoo's hashpower.
  const size_t n = end - begin;
  if (!opt_.sort_batches || n < 4096) return {};
  const size_t hp = index_.hashpower();
  const size_t bits = std::min<size_t>(hp, 12), shift = hp - bits;
  const uint64_t mask = (uint64_t(1) << hp) - 1;
  std::vector<uint32_t> count((size_t(1) << bits) + 1, 0), bin(n), order(n);
  for (size_t i = 0; i < n; ++i) {
    bin[i] = uint32_t((mix64(ids[begin + i]) & mask) >> shift);
    ++count[bin[i] + 1];
  }
  for (size_t b = 1; b < count.size(); ++b) count[b] += count[b - 1];
  for (size_t i = 0; i < n; ++i) order[count[bin[i]]++] = uint32_t(i);
  return order;
}

size_t EmbeddingTable::lookup(const uint64_t *ids, size_t n, float *out, bool insert, uint32_t now) {
  SharedGuard guard(*this);
  std::atomic<size_t> created{0};
  const size_t bytes = size_t(dim_) * sizeof(float);
  constexpr uint32_t kMissing = UINT32_MAX;
  constexpr size_t kAhead = 16;  // rows prefetched ahead of the copy
  parallel_for(n, [&](size_t begin, size_t end, size_t) {
    std::vector<uint32_t> dirtied, rows(end - begin);
    size_t made = 0;
    // Pass 1: IDs -> rows; admitted unknown IDs are queued and created together (one
    // allocator lock per batch). Pass 2: copy rows, prefetching ahead so the random reads
    // overlap instead of waiting one by one.
    std::vector<size_t> pending;
    const std::vector<uint32_t> order = bucket_order(ids, begin, end);
    for (size_t o = 0; o < end - begin; ++o) {
      const size_t i = order.empty() ? begin + o : begin + order[o];
      uint32_t r;
      if (index_.find(ids[i], r)) {
        rows[i - begin] = r;
        continue;
      }
      rows[i - begin] = kMissing;
      bool admit = insert && (!sketch_ || [&] {
        uint32_t count = sketch_->add(ids[i]);
        if (count == 1) tracked_.fetch_add(1, std::memory_order_relaxed);
        return count >= opt_.admit_after;
      }());
      if (admit) pending.push_back(i);
    }
    if (!pending.empty()) {
      std::sort(pending.begin(), pending.end());  // create rows in batch order: deterministic
      grow_index(pending.size());
      std::vector<uint32_t> fresh, unused;
      fresh.reserve(pending.size());
      store_.allocate_many(pending.size(), fresh);
      for (size_t j = 0; j < pending.size(); ++j) {
        size_t i = pending[j];
        uint32_t r = fresh[j];
        if (!install_row(ids[i], r, now, dirtied)) {  // a duplicate in this batch, or another thread won
          unused.push_back(r);
          index_.find(ids[i], r);
        } else {
          ++made;
        }
        rows[i - begin] = r;
      }
      store_.release_many(unused);
    }
    const size_t lines = (bytes + 63) / 64;
    for (size_t i = begin; i < end; ++i) {
      size_t k = i - begin;
      if (k + kAhead < rows.size() && rows[k + kAhead] != kMissing) {
        const char *p = reinterpret_cast<const char *>(store_.row(rows[k + kAhead]));
        for (size_t l = 0; l < lines; ++l) __builtin_prefetch(p + 64 * l);
      }
      float *dst = out + i * dim_;
      if (rows[k] == kMissing)
        std::memset(dst, 0, bytes);
      else
        std::memcpy(dst, store_.row(rows[k]), bytes);
    }
    created.fetch_add(made, std::memory_order_relaxed);
    publish_dirty(dirtied);
  });
  return created.load();
}

size_t EmbeddingTable::apply_gradients(const uint64_t *ids, size_t n, const float *grads, uint32_t now) {
  size_t bad;
  if (!all_finite(grads, n * dim_, &bad))
    throw std::invalid_argument("gradient for id " + std::to_string(ids[bad / dim_]) + " (row " +
                                std::to_string(bad / dim_) + ", column " + std::to_string(bad % dim_) +
                                ") is NaN or infinite; nothing was applied");
  // Sum duplicate IDs: open addressing over the batch, first occurrence is the unique slot.
  size_t cap = 16;
  while (cap < 2 * n) cap <<= 1;
  std::vector<int64_t> table(cap, -1);
  std::vector<uint32_t> first(n);  // batch row -> unique index
  std::vector<uint64_t> uniq;
  uniq.reserve(n);
  std::vector<size_t> uniq_src;  // unique index -> first batch row
  uniq_src.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    size_t h = mix64(ids[i]) & (cap - 1);
    while (table[h] >= 0 && uniq[table[h]] != ids[i]) h = (h + 1) & (cap - 1);
    if (table[h] < 0) {
      table[h] = int64_t(uniq.size());
      uniq.push_back(ids[i]);
      uniq_src.push_back(i);
    }
    first[i] = uint32_t(table[h]);
  }
  const float *g = grads;
  std::vector<float> summed;
  if (uniq.size() < n) {
    summed.assign(uniq.size() * dim_, 0.0f);
    for (size_t i = 0; i < n; ++i) {
      float *acc = summed.data() + size_t(first[i]) * dim_;
      const float *src = grads + i * dim_;
      for (uint32_t d = 0; d < dim_; ++d) acc[d] += src[d];
    }
    g = summed.data();
  }
  const bool dedup = uniq.size() < n;
  SharedGuard guard(*this);
  std::atomic<size_t> applied{0};
  parallel_for(uniq.size(), [&](size_t begin, size_t end, size_t) {
    std::vector<uint32_t> dirtied;
    size_t done = 0, dropped = 0;
    for (size_t u = begin; u < end; ++u) {
      uint32_t r;
      if (!index_.find(uniq[u], r)) {
        ++dropped;
        continue;
      }
      const float *grad = dedup ? g + u * dim_ : g + uniq_src[u] * dim_;
      lock_row(r);
      opt_.optimizer.apply(store_.row(r), grad, dim_);
      store_.meta(r).updated = now;
      unlock_row(r);
      mark_dirty(r, dirtied);
      ++done;
    }
    applied.fetch_add(done, std::memory_order_relaxed);
    dropped_.fetch_add(dropped, std::memory_order_relaxed);
    publish_dirty(dirtied);
  });
  return applied.load();
}

size_t EmbeddingTable::evict(uint32_t now) {
  if (opt_.ttl_seconds == 0) return 0;
  auto expired = [&](const RowMeta &m) {
    return (m.flags.load(std::memory_order_acquire) & kLive) && uint64_t(m.updated) + opt_.ttl_seconds < now;
  };
  std::vector<uint32_t> candidates;
  {
    SharedGuard guard(*this);
    uint32_t hw = store_.high_water();
    for (uint32_t r = 0; r < hw; ++r)
      if (expired(store_.meta(r))) candidates.push_back(r);
  }
  size_t removed = 0;
  for (size_t begin = 0; begin < candidates.size(); begin += kEvictChunk) {
    ExclusiveGuard guard(*this);  // short sections: lookups run in between
    size_t end = std::min(candidates.size(), begin + kEvictChunk);
    std::vector<uint64_t> gone;
    for (size_t c = begin; c < end; ++c) {
      uint32_t r = candidates[c];
      RowMeta &m = store_.meta(r);
      if (!expired(m)) continue;  // updated since the scan
      index_.erase(m.id);
      m.flags.store(0, std::memory_order_release);
      gone.push_back(m.id);
      store_.release(r);
    }
    removed += gone.size();
    if (opt_.track_changes) {
      std::lock_guard<std::mutex> lock(changes_mu_);
      tombstones_.insert(tombstones_.end(), gone.begin(), gone.end());
    }
  }
  evicted_.fetch_add(removed, std::memory_order_relaxed);
  return removed;
}

}  // namespace flywheel
