// Python bindings (nanobind) of the native embedding table: paramserver._cuckoo.
// Batch calls release the GIL; arrays cross without copies per ID (NumPy in, NumPy out).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/tuple.h>

#include <vector>

#include "embedding_table.hpp"

namespace nb = nanobind;
using namespace flywheel;

using Ids = nb::ndarray<const uint64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Times = nb::ndarray<const uint32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Counters = Times;
using Rows = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using OutRows = nb::ndarray<float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

namespace {

// Hand a vector's buffer to NumPy; the capsule frees it with the array.
template <class T>
nb::ndarray<nb::numpy, T> numpy(std::vector<T> &&v, size_t rows, size_t cols = 0) {
  auto *heap = new std::vector<T>(std::move(v));
  nb::capsule owner(heap, [](void *p) noexcept { delete static_cast<std::vector<T> *>(p); });
  if (cols == 0) return nb::ndarray<nb::numpy, T>(heap->data(), {rows}, owner);
  return nb::ndarray<nb::numpy, T>(heap->data(), {rows, cols}, owner);
}

}  // namespace

NB_MODULE(_cuckoo, m) {
  m.doc() = "Collisionless embedding table on libcuckoo (see paramserver/table.py for the API)";
  // Tables held by daemon threads (PS servers) are still alive at interpreter exit.
  nb::set_leak_warnings(false);
  // Snapshots record it: saved admission counters load only into a sketch of the same layout.
  m.attr("SKETCH_LAYOUT") = CountMinSketch::kLayout;

  nb::class_<TableOptions>(m, "Options")
      .def(nb::init<>())
      .def_rw("dim", &TableOptions::dim)
      .def_prop_rw("init", [](const TableOptions &o) { return int(o.init); },
                   [](TableOptions &o, int v) { o.init = InitKind(v); })
      .def_rw("init_scale", &TableOptions::init_scale)
      .def_rw("seed", &TableOptions::seed)
      .def_rw("admit_after", &TableOptions::admit_after)
      .def_rw("sketch_width", &TableOptions::sketch_width)
      .def_rw("sketch_depth", &TableOptions::sketch_depth)
      .def_rw("ttl_seconds", &TableOptions::ttl_seconds)
      .def_rw("slab_rows", &TableOptions::slab_rows)
      .def_rw("threads", &TableOptions::threads)
      .def_rw("track_changes", &TableOptions::track_changes)
      .def_rw("expected_rows", &TableOptions::expected_rows)
      .def_rw("sort_batches", &TableOptions::sort_batches)
      .def_prop_rw("optimizer", [](const TableOptions &o) { return int(o.optimizer.kind); },
                   [](TableOptions &o, int v) { o.optimizer.kind = OptimizerKind(v); })
      .def_prop_rw("learning_rate", [](const TableOptions &o) { return o.optimizer.learning_rate; },
                   [](TableOptions &o, float v) { o.optimizer.learning_rate = v; })
      .def_prop_rw("initial_accumulator", [](const TableOptions &o) { return o.optimizer.initial_accumulator; },
                   [](TableOptions &o, float v) { o.optimizer.initial_accumulator = v; })
      .def_prop_rw("epsilon", [](const TableOptions &o) { return o.optimizer.epsilon; },
                   [](TableOptions &o, float v) { o.optimizer.epsilon = v; })
      .def_prop_rw("l1", [](const TableOptions &o) { return o.optimizer.l1; },
                   [](TableOptions &o, float v) { o.optimizer.l1 = v; })
      .def_prop_rw("l2", [](const TableOptions &o) { return o.optimizer.l2; },
                   [](TableOptions &o, float v) { o.optimizer.l2 = v; })
      .def_prop_rw("beta", [](const TableOptions &o) { return o.optimizer.beta; },
                   [](TableOptions &o, float v) { o.optimizer.beta = v; });

  nb::class_<EmbeddingTable>(m, "Table")
      .def(nb::init<const TableOptions &>())
      .def_prop_ro("dim", &EmbeddingTable::dim)
      .def_prop_ro("row_floats", &EmbeddingTable::row_floats)
      .def("lookup",
           [](EmbeddingTable &t, Ids ids, OutRows out, bool insert, uint32_t now) {
             nb::gil_scoped_release nogil;
             return t.lookup(ids.data(), ids.shape(0), out.data(), insert, now);
           })
      .def("apply_gradients",
           [](EmbeddingTable &t, Ids ids, Rows grads, uint32_t now) {
             nb::gil_scoped_release nogil;
             return t.apply_gradients(ids.data(), ids.shape(0), grads.data(), now);
           })
      .def("evict",
           [](EmbeddingTable &t, uint32_t now) {
             nb::gil_scoped_release nogil;
             return t.evict(now);
           })
      .def("export_delta",
           [](EmbeddingTable &t, bool with_slots) {
             Delta d;
             {
               nb::gil_scoped_release nogil;
               d = t.export_delta(with_slots);
             }
             size_t n = d.ids.size(), width = with_slots ? t.row_floats() : t.dim();
             return nb::make_tuple(numpy(std::move(d.ids), n), numpy(std::move(d.rows), n, width),
                                   numpy(std::move(d.tombstones), d.tombstones.size()));
           })
      .def("export_rows",
           [](const EmbeddingTable &t, uint32_t start, uint32_t max_rows) {
             RowBatch b;
             {
               nb::gil_scoped_release nogil;
               b = t.export_rows(start, max_rows);
             }
             size_t n = b.ids.size();
             return nb::make_tuple(numpy(std::move(b.ids), n), numpy(std::move(b.rows), n, t.row_floats()),
                                   numpy(std::move(b.updated), n), b.next);
           })
      .def("import_rows",
           [](EmbeddingTable &t, Ids ids, Rows rows, nb::object updated, uint32_t now, bool mark_dirty) {
             const uint32_t *times = nullptr;
             Times held;
             if (!updated.is_none()) {
               held = nb::cast<Times>(updated);
               times = held.data();
             }
             nb::gil_scoped_release nogil;
             t.import_rows(ids.data(), ids.shape(0), rows.data(), uint32_t(rows.shape(1)), times, now, mark_dirty);
           },
           nb::arg("ids"), nb::arg("rows"), nb::arg("updated").none(), nb::arg("now"), nb::arg("mark_dirty"))
      .def("export_sketch",
           [](const EmbeddingTable &t) {
             SketchState s;
             {
               nb::gil_scoped_release nogil;
               s = t.export_sketch();
             }
             size_t n = s.cells.size();
             return nb::make_tuple(s.width, s.depth, numpy(std::move(s.cells), n), s.tracked);
           })
      .def("import_sketch",
           [](EmbeddingTable &t, uint32_t width, uint32_t depth, Counters cells, uint64_t tracked) {
             nb::gil_scoped_release nogil;
             t.import_sketch(width, depth, cells.data(), cells.shape(0), tracked);
           },
           nb::arg("width"), nb::arg("depth"), nb::arg("cells"), nb::arg("tracked"))
      .def("remove",
           [](EmbeddingTable &t, Ids ids) {
             nb::gil_scoped_release nogil;
             return t.remove(ids.data(), ids.shape(0));
           })
      .def("clear", [](EmbeddingTable &t) {
             nb::gil_scoped_release nogil;
             t.clear();
           })
      .def("stats", [](const EmbeddingTable &t) {
        TableStats s = t.stats();
        nb::dict d;
        d["rows"] = s.rows;
        d["capacity_rows"] = s.capacity_rows;
        d["row_bytes"] = s.row_bytes;
        d["index_bytes"] = s.index_bytes;
        d["sketch_bytes"] = s.sketch_bytes;
        d["bytes"] = s.bytes;
        d["admitted"] = s.admitted;
        d["evicted"] = s.evicted;
        d["dropped_gradients"] = s.dropped_gradients;
        d["tracked_ids"] = s.tracked_ids;
        d["load_factor"] = s.load_factor;
        return d;
      });
}
