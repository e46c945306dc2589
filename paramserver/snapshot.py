"""Snapshot format of an embedding table: Arrow IPC, versioned and checksummed.

Layout (``flywheel-embedding-table``, version 2): two Arrow IPC streams back to back in one
file or byte stream.

1. Rows. Schema ``id: uint64``, ``row: fixed_size_list<float32>[row_floats]`` (embedding then
   the optimizer slots), ``updated: uint32`` (seconds since the epoch of the row's last
   update); schema metadata ``flywheel.format``, ``flywheel.version``, ``flywheel.table`` (the
   TableConfig as JSON). Data batches of up to 65,536 rows, each with custom metadata
   ``crc32`` (CRC-32 of the batch's id, row and updated buffers) and ``rows``.
2. Admission sketch: the counters of the count-min sketch behind ``admit_after``, so IDs
   counted but not yet admitted keep their counts. Schema ``cells: uint32``; schema metadata
   ``flywheel.part`` (``sketch``), ``sketch.width``, ``sketch.depth`` (both 0 for a table
   without admission), ``sketch.layout`` (how IDs map to cells: the native
   ``SKETCH_LAYOUT``) and ``sketch.tracked_ids``. Batches of up to 1,048,576 counters
   (4 MiB; depth rows of width, row-major), each with ``crc32`` and ``cells``; then a final
   empty batch with ``end=1``, ``total_rows``, ``total_cells`` and ``crc32`` chained over
   every batch of both parts and the sketch's metadata.

Version 1 (still read) is part 1 alone, closed by the end batch (without ``total_cells``).

A stream is refused (``SnapshotError``) if it is not this format or version, if its table's
``dim``/optimizer differ, if any checksum differs, or if the end batch is missing
(truncation). Being a stream, it can be written to and read from HDFS or a socket directly.

Restoring the admission sketch: the counters are loaded only into a table whose sketch has
the snapshot's width, depth and layout. Otherwise (another ``sketch_width``/``sketch_depth``
in the config, a version 1 snapshot, or one of a table without admission) the restored
table's sketch starts empty and a warning is logged: IDs counted but not yet admitted need
``admit_after`` sightings again. Such a snapshot is not refused, because its rows are what a
restore must not lose; refusing would leave a shard whose sketch was resized in the config
unable to start from any snapshot. A table without admission (``admit_after=1``, as on
serving replicas) verifies the sketch part and ignores it.
"""

from __future__ import annotations

import json
import logging
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pyarrow as pa

from paramserver import _cuckoo
from paramserver.config import TableConfig

if TYPE_CHECKING:
    from paramserver.table import EmbeddingTable

FORMAT, VERSION = "flywheel-embedding-table", "2"
READABLE_VERSIONS = ("1", "2")
BATCH_ROWS = 65536
BATCH_CELLS = 1 << 20
SKETCH_SCHEMA = pa.schema([("cells", pa.uint32())])

log = logging.getLogger(__name__)


class SnapshotError(ValueError):
    """A snapshot cannot be restored: corrupt, truncated, another format, or another table."""


@dataclass
class _Chain:
    """What the end batch vouches for: batch CRCs chained in order, rows and cells counted."""

    crc: int = 0
    rows: int = 0
    cells: int = 0

    def add(self, crc: int) -> None:
        self.crc = zlib.crc32(crc.to_bytes(4, "little"), self.crc)

    def end_metadata(self) -> dict[str, str]:
        return {"end": "1", "total_rows": str(self.rows), "total_cells": str(self.cells), "crc32": str(self.crc)}


@dataclass(frozen=True)
class _Sketch:
    """A snapshot's admission sketch (``cells`` is None when the reader does not need them)."""

    width: int
    depth: int
    layout: int
    tracked: int
    cells: np.ndarray | None

    def header(self) -> bytes:
        return f"{self.width}x{self.depth}/{self.layout}/{self.tracked}".encode()


def _schema(cfg: TableConfig) -> pa.Schema:
    return pa.schema(
        [("id", pa.uint64()), ("row", pa.list_(pa.float32(), cfg.row_floats)), ("updated", pa.uint32())],
        metadata={"flywheel.format": FORMAT, "flywheel.version": VERSION,
                  "flywheel.table": json.dumps(cfg.to_dict())},
    )


def _crc(*arrays: np.ndarray) -> int:
    crc = 0
    for arr in arrays:
        crc = zlib.crc32(memoryview(np.ascontiguousarray(arr)).cast("B"), crc)
    return crc


def _metadata(raw) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (raw or {}).items()}


@contextmanager
def _open(target, mode: str):
    if isinstance(target, (str, Path)):
        with open(target, mode) as f:
            yield f
    else:
        yield target


def write_snapshot(table: EmbeddingTable, dest: str | Path | BinaryIO) -> int:
    """Stream every live row of ``table`` and its admission counters to ``dest``; returns the
    number of rows.

    Rows are read in windows of the row store, so memory stays at one batch plus one copy of
    the sketch (width * depth * 4 bytes); rows updated or IDs counted while the snapshot runs
    may be captured before or after that change (a fuzzy snapshot: pause updates and
    inserting lookups for a point-in-time one, as the parameter server does).
    """
    cfg, native = table.config, table._native
    schema, chain, start = _schema(cfg), _Chain(), 0
    with _open(dest, "wb") as sink:
        with pa.ipc.new_stream(sink, schema) as writer:
            while True:
                ids, rows, updated, end = native.export_rows(start, BATCH_ROWS)
                if len(ids):
                    crc = _crc(ids, rows, updated)
                    chain.add(crc)
                    batch = pa.record_batch([
                        pa.array(ids),
                        pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), cfg.row_floats),
                        pa.array(updated),
                    ], schema=schema)
                    writer.write_batch(batch, custom_metadata={"crc32": str(crc), "rows": str(len(ids))})
                    chain.rows += len(ids)
                if end < start + BATCH_ROWS:  # the window reached the last row ever handed out
                    break
                start = end
        _write_sketch(sink, native, chain)
    return chain.rows


def _write_sketch(sink, native, chain: _Chain) -> None:
    width, depth, cells, tracked = native.export_sketch()
    sketch = _Sketch(width, depth, _cuckoo.SKETCH_LAYOUT, tracked, cells)
    chain.add(zlib.crc32(sketch.header()))
    schema = SKETCH_SCHEMA.with_metadata({
        "flywheel.part": "sketch", "sketch.width": str(width), "sketch.depth": str(depth),
        "sketch.layout": str(sketch.layout), "sketch.tracked_ids": str(tracked),
    })
    with pa.ipc.new_stream(sink, schema) as writer:
        for start in range(0, len(cells), BATCH_CELLS):
            part = cells[start:start + BATCH_CELLS]
            crc = _crc(part)
            chain.add(crc)
            chain.cells += len(part)
            writer.write_batch(pa.record_batch([pa.array(part)], schema=schema),
                               custom_metadata={"crc32": str(crc), "cells": str(len(part))})
        writer.write_batch(pa.record_batch([pa.array([], pa.uint32())], schema=schema),
                           custom_metadata=chain.end_metadata())


def _table_config(schema: pa.Schema, where: str) -> tuple[TableConfig, str]:
    meta = _metadata(schema.metadata)
    if meta.get("flywheel.format") != FORMAT:
        raise SnapshotError(f"{where} is not a Flywheel embedding-table snapshot (format {meta.get('flywheel.format')!r})")
    version = meta.get("flywheel.version")
    if version not in READABLE_VERSIONS:
        raise SnapshotError(f"{where} has snapshot format version {version!r}; this build reads versions "
                            f"{', '.join(READABLE_VERSIONS)}: restore it with a matching Flywheel release")
    return TableConfig.from_dict(json.loads(meta["flywheel.table"])), version


def read_snapshot(src: str | Path | BinaryIO, cfg: TableConfig, native) -> int:
    """Verify ``src`` batch by batch and import its rows and admission counters into
    ``native`` (an empty table); returns the number of rows. Raises SnapshotError on any
    mismatch."""
    where = f"snapshot {src}" if isinstance(src, (str, Path)) else "snapshot stream"
    chain, sketch = _Chain(), None
    try:
        with _open(src, "rb") as source:
            with pa.ipc.open_stream(source) as reader:
                saved, version = _table_config(reader.schema, where)
                if (saved.dim, saved.optimizer.kind) != (cfg.dim, cfg.optimizer.kind):
                    raise SnapshotError(f"{where} holds table {saved.name!r} (dim {saved.dim}, {saved.optimizer.kind}); "
                                        f"cannot restore into {cfg.name!r} (dim {cfg.dim}, {cfg.optimizer.kind})")
                ended = _read_rows(reader, cfg, native, chain, where)
            if version == "1" and not ended:
                raise SnapshotError(f"{where} is truncated: no end marker after {chain.rows} rows; "
                                    "restore an earlier snapshot")
            if version != "1":
                if ended:
                    raise SnapshotError(f"{where}: end marker before the admission sketch; the snapshot is corrupt")
                with pa.ipc.open_stream(source) as reader:
                    sketch = _read_sketch(reader, chain, where, keep=cfg.admit_after > 1)
    except SnapshotError:
        raise
    except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
        raise SnapshotError(f"{where} is corrupt or truncated ({type(exc).__name__}: {exc}); "
                            "restore an earlier snapshot") from exc
    _load_sketch(native, cfg, sketch, where)
    return chain.rows


def _next_batch(reader) -> tuple[pa.RecordBatch | None, dict[str, str]]:
    try:
        batch, meta = reader.read_next_batch_with_custom_metadata()
    except StopIteration:
        return None, {}
    return batch, _metadata(meta)


def _check_end(meta: dict[str, str], chain: _Chain, where: str) -> None:
    said = (int(meta["total_rows"]), int(meta.get("total_cells", 0)), int(meta["crc32"]))
    if said != (chain.rows, chain.cells, chain.crc):
        raise SnapshotError(f"{where}: end marker says {said[0]} rows and {said[1]} sketch cells, read "
                            f"{chain.rows} and {chain.cells} (or their checksums differ); the snapshot is corrupt")


def _read_rows(reader, cfg: TableConfig, native, chain: _Chain, where: str) -> bool:
    """Import the row batches; True if they closed with an end marker (version 1)."""
    while True:
        batch, meta = _next_batch(reader)
        if batch is None:
            return False
        if meta.get("end") == "1":
            _check_end(meta, chain, where)
            return True
        ids = batch.column(0).to_numpy()
        rows = batch.column(1).flatten().to_numpy().reshape(len(ids), cfg.row_floats)
        updated = batch.column(2).to_numpy()
        crc = _crc(ids, rows, updated)
        if str(crc) != meta.get("crc32"):
            raise SnapshotError(f"{where}: checksum mismatch in batch {chain.rows // BATCH_ROWS} "
                                f"(rows {chain.rows}..{chain.rows + len(ids)}); the snapshot is corrupt")
        chain.add(crc)
        native.import_rows(ids, np.ascontiguousarray(rows), updated, 0, False)
        chain.rows += len(ids)


def _read_sketch(reader, chain: _Chain, where: str, keep: bool) -> _Sketch:
    """Verify the admission-sketch part up to the end marker; its counters if ``keep``."""
    meta = _metadata(reader.schema.metadata)
    if meta.get("flywheel.part") != "sketch":
        raise SnapshotError(f"{where}: expected the admission sketch after the rows, found part "
                            f"{meta.get('flywheel.part')!r}; the snapshot is corrupt")
    sketch = _Sketch(int(meta["sketch.width"]), int(meta["sketch.depth"]), int(meta["sketch.layout"]),
                     int(meta["sketch.tracked_ids"]), None)
    chain.add(zlib.crc32(sketch.header()))
    chunks = []
    while True:
        batch, meta = _next_batch(reader)
        if batch is None:
            raise SnapshotError(f"{where} is truncated: no end marker after {chain.rows} rows and "
                                f"{chain.cells} sketch cells; restore an earlier snapshot")
        if meta.get("end") == "1":
            _check_end(meta, chain, where)
            break
        cells = batch.column(0).to_numpy()
        crc = _crc(cells)
        if str(crc) != meta.get("crc32"):
            raise SnapshotError(f"{where}: checksum mismatch in admission sketch batch {chain.cells // BATCH_CELLS} "
                                f"(cells {chain.cells}..{chain.cells + len(cells)}); the snapshot is corrupt")
        chain.add(crc)
        chain.cells += len(cells)
        if keep:
            chunks.append(cells)
    if chain.cells != sketch.width * sketch.depth:
        raise SnapshotError(f"{where}: admission sketch is {sketch.width}x{sketch.depth} but holds {chain.cells} "
                            "cells; the snapshot is corrupt")
    if not keep:
        return sketch
    return _Sketch(sketch.width, sketch.depth, sketch.layout, sketch.tracked,
                   np.concatenate(chunks) if chunks else np.zeros(0, np.uint32))


def _load_sketch(native, cfg: TableConfig, sketch: _Sketch | None, where: str) -> None:
    """Load verified admission counters into ``native``, or leave its sketch empty with a
    warning when they do not fit (see the module docstring)."""
    if cfg.admit_after <= 1:
        return  # admits at once: no sketch to fill
    wanted = (cfg.sketch_width, cfg.sketch_depth, _cuckoo.SKETCH_LAYOUT)
    if sketch is None or sketch.width == 0:
        log.warning("%s has no admission counts (format version 1, or written by a table that admits at once): "
                    "table %r starts its admission sketch empty, so IDs seen but not yet admitted need "
                    "admit_after=%d sightings again", where, cfg.name, cfg.admit_after)
    elif (sketch.width, sketch.depth, sketch.layout) != wanted:
        log.warning("%s holds a %dx%d admission sketch (layout %d) but table %r is configured %dx%d (layout %d): "
                    "its admission counts are dropped and IDs seen but not yet admitted need admit_after=%d "
                    "sightings again; to keep them restore into a table with sketch_width=%d, "
                    "sketch_depth=%d built with the same sketch layout",
                    where, sketch.width, sketch.depth, sketch.layout, cfg.name, *wanted, cfg.admit_after,
                    sketch.width, sketch.depth)
    else:
        native.import_sketch(sketch.width, sketch.depth, sketch.cells, sketch.tracked)
