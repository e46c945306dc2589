"""Collisionless embedding table: 64-bit feature IDs, each with a row of its own.

The native part (``paramserver._cuckoo``, C++17 on libcuckoo) holds ID -> row in a concurrent
cuckoo hash map and rows in contiguous slabs; batch calls release the GIL and use every core.
This module checks inputs (so a bad batch leaves the table unchanged) and adds snapshots.

Example::

    table = EmbeddingTable(TableConfig(name="item_id", dim=16, admit_after=2))
    ids = np.array([7, 7, 42], dtype=np.uint64)
    table.lookup(ids, insert=True)          # zeros: first sighting, not admitted yet
    emb = table.lookup(ids, insert=True)    # 7 admitted (seen twice), 42 still zeros
    table.apply_gradients(ids, np.ones((3, 16), np.float32))
    delta = table.export_delta()            # rows touched since the last export
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from paramserver import _cuckoo
from paramserver.config import INITIALIZER_CODES, OPTIMIZER_CODES, TableConfig


@dataclass(frozen=True)
class Delta:
    """Changes since the previous export. Apply ``tombstones`` (deletes) before ``ids``/``rows``
    (upserts): an ID evicted and re-admitted between two exports is in both."""

    ids: np.ndarray         # uint64 [n]
    rows: np.ndarray        # float32 [n, dim] (or [n, row_floats] with slots)
    tombstones: np.ndarray  # uint64 [m]


def _now(now: float | None) -> int:
    return int(time.time() if now is None else now)


def as_ids(ids, where: str = "ids") -> np.ndarray:
    """Feature IDs as a contiguous uint64 vector (int64 is reinterpreted, not copied)."""
    arr = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
    if arr.dtype == np.int64:
        arr = arr.view(np.uint64)
    elif arr.dtype != np.uint64:
        if arr.size == 0:
            arr = arr.astype(np.uint64)
        else:
            raise TypeError(f"{where} must be uint64 or int64 feature IDs, got {arr.dtype}; cast with .astype(np.uint64)")
    if arr.ndim != 1:
        raise ValueError(f"{where} must be 1-D, got shape {arr.shape}; flatten it with .ravel()")
    return np.ascontiguousarray(arr)


def _native_options(cfg: TableConfig) -> _cuckoo.Options:
    o = _cuckoo.Options()
    o.dim = cfg.dim
    o.init = INITIALIZER_CODES[cfg.initializer]
    o.init_scale = cfg.init_scale
    o.seed = cfg.seed
    o.admit_after = cfg.admit_after
    o.sketch_width = cfg.sketch_width
    o.sketch_depth = cfg.sketch_depth
    o.ttl_seconds = cfg.ttl_seconds
    o.track_changes = cfg.track_changes
    o.expected_rows = cfg.expected_rows
    o.threads = cfg.threads
    opt = cfg.optimizer
    o.optimizer = OPTIMIZER_CODES[opt.kind]
    o.learning_rate = opt.learning_rate
    for name in ("initial_accumulator", "epsilon", "l1", "l2", "beta"):
        if hasattr(opt, name):
            setattr(o, name, getattr(opt, name))
    return o


class EmbeddingTable:
    """One collisionless embedding table (see module docstring)."""

    def __init__(self, config: TableConfig):
        self.config = config
        self._native = _cuckoo.Table(_native_options(config))

    @property
    def dim(self) -> int:
        return self.config.dim

    def __len__(self) -> int:
        return self._native.stats()["rows"]

    def lookup(self, ids, insert: bool = False, now: float | None = None) -> np.ndarray:
        """Rows of ``ids`` as float32 [n, dim]; unknown or not-yet-admitted IDs read zeros.

        Args:
          ids: uint64/int64 feature IDs, duplicates allowed.
          insert: count each unknown ID toward admission and create rows for admitted ones
            (training); False only reads (serving).
          now: seconds since the epoch stamped on created rows (default: the clock).
        """
        ids = as_ids(ids)
        out = np.empty((ids.shape[0], self.dim), dtype=np.float32)
        self._native.lookup(ids, out, insert, _now(now))
        return out

    def apply_gradients(self, ids, grads, now: float | None = None) -> int:
        """Apply the table's optimizer; duplicate IDs are summed; IDs without rows dropped.

        Returns:
          Distinct rows updated.

        Raises:
          TypeError, ValueError: wrong dtype, shape, or a NaN/Inf gradient (table unchanged).
        """
        ids = as_ids(ids)
        grads = self._check_rows(grads, ids, self.dim, "grads")
        return self._native.apply_gradients(ids, grads, _now(now))

    def export_delta(self, with_slots: bool = False) -> Delta:
        """Rows created or updated since the last export, and IDs removed since then.

        Every update lands in exactly one export (or a later one, if it races the export);
        memory held is at most one entry per touched row plus one per removal.
        """
        ids, rows, tombstones = self._native.export_delta(with_slots)
        return Delta(ids, rows, tombstones)

    def evict(self, now: float | None = None) -> int:
        """Remove rows not updated for more than ``ttl_seconds``; their memory is reused."""
        return self._native.evict(_now(now))

    def import_rows(self, ids, rows, updated=None, now: float | None = None, mark_dirty: bool = False) -> None:
        """Insert or overwrite rows, bypassing admission: ``rows`` is [n, dim] (slots start
        fresh) or [n, row_floats] (embedding + slots, as in snapshots)."""
        ids = as_ids(ids)
        rows = np.ascontiguousarray(rows)
        width = rows.shape[1] if rows.ndim == 2 else -1
        if width not in (self.dim, self.config.row_floats):
            raise ValueError(f"rows must be [n, {self.dim}] or [n, {self.config.row_floats}], got {rows.shape}")
        rows = self._check_rows(rows, ids, width, "rows")
        if not np.isfinite(rows).all():
            raise ValueError(f"rows for table {self.config.name!r} contain NaN or Inf; nothing was imported")
        if updated is not None:
            updated = np.ascontiguousarray(updated, dtype=np.uint32)
        self._native.import_rows(ids, rows, updated, _now(now), mark_dirty)

    def export_rows(self, batch_rows: int = 65_536):
        """Every live row, in batches: yields ``(ids, rows [n, row_floats], updated)`` (embedding
        and optimizer slots, last-update times), ready for :meth:`import_rows` elsewhere."""
        start = 0
        while True:
            ids, rows, updated, end = self._native.export_rows(start, batch_rows)
            if len(ids):
                yield ids, rows, updated
            if end < start + batch_rows:  # the window reached the last row ever handed out
                return
            start = end

    def remove(self, ids) -> int:
        """Delete rows by ID (recorded as tombstones); returns how many existed."""
        return self._native.remove(as_ids(ids))

    def clear(self) -> None:
        self._native.clear()

    def stats(self) -> dict:
        """rows, bytes (rows + index + sketch), admitted, evicted, dropped_gradients,
        tracked_ids (IDs counted by the admission sketch), load_factor, ..."""
        return self._native.stats()

    def snapshot(self, dest: str | Path | BinaryIO) -> int:
        """Write every row and the admission counts to ``dest`` (path or binary stream);
        returns rows written. Format: see :mod:`paramserver.snapshot`."""
        from paramserver.snapshot import write_snapshot

        return write_snapshot(self, dest)

    def restore(self, src: str | Path | BinaryIO) -> int:
        """Replace the table's rows and admission counts with a snapshot's; a corrupt,
        truncated or incompatible snapshot raises :class:`~paramserver.snapshot.SnapshotError`
        and changes nothing. Counts from a sketch of another size are dropped with a warning."""
        from paramserver.snapshot import read_snapshot

        fresh = _cuckoo.Table(_native_options(self.config))
        rows = read_snapshot(src, self.config, fresh)
        self._native = fresh
        return rows

    def _check_rows(self, rows, ids: np.ndarray, width: int, where: str) -> np.ndarray:
        if not isinstance(rows, np.ndarray):
            rows = np.asarray(rows, dtype=np.float32)
        if rows.dtype != np.float32:
            raise TypeError(f"{where} must be float32, got {rows.dtype}; cast with .astype(np.float32)")
        if rows.ndim != 2 or rows.shape != (ids.shape[0], width):
            raise ValueError(f"{where} must have shape ({ids.shape[0]}, {width}) for {ids.shape[0]} ids "
                             f"in table {self.config.name!r} (dim {self.dim}), got {rows.shape}")
        return np.ascontiguousarray(rows)
