"""Snapshot format of an embedding table: an Arrow IPC stream, versioned and checksummed.

Layout (``flywheel-embedding-table``, version 1):

* schema: ``id: uint64``, ``row: fixed_size_list<float32>[row_floats]`` (embedding then the
  optimizer slots), ``updated: uint32`` (seconds since the epoch of the row's last update);
  schema metadata ``flywheel.format``, ``flywheel.version``, ``flywheel.table`` (the
  TableConfig as JSON);
* data batches of up to 65,536 rows, each with custom metadata ``crc32`` (CRC-32 of the
  batch's id, row and updated buffers) and ``rows``;
* a final empty batch with ``end=1``, ``total_rows`` and ``crc32`` chained over every batch.

A stream is refused (``SnapshotError``) if it is not this format or version, if its table's
``dim``/optimizer differ, if any checksum differs, or if the end batch is missing
(truncation). Being a stream, it can be written to and read from HDFS or a socket directly.
Admission counts (the sketch) are not in snapshots: restored rows need no admission.
"""

from __future__ import annotations

import json
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pyarrow as pa

from paramserver.config import TableConfig

if TYPE_CHECKING:
    from paramserver.table import EmbeddingTable

FORMAT, VERSION = "flywheel-embedding-table", "1"
BATCH_ROWS = 65536


class SnapshotError(ValueError):
    """A snapshot cannot be restored: corrupt, truncated, another format, or another table."""


def _schema(cfg: TableConfig) -> pa.Schema:
    return pa.schema(
        [("id", pa.uint64()), ("row", pa.list_(pa.float32(), cfg.row_floats)), ("updated", pa.uint32())],
        metadata={"flywheel.format": FORMAT, "flywheel.version": VERSION,
                  "flywheel.table": json.dumps(cfg.to_dict())},
    )


def _crc(ids: np.ndarray, rows: np.ndarray, updated: np.ndarray, seed: int = 0) -> int:
    crc = zlib.crc32(memoryview(np.ascontiguousarray(ids)).cast("B"), seed)
    crc = zlib.crc32(memoryview(np.ascontiguousarray(rows)).cast("B"), crc)
    return zlib.crc32(memoryview(np.ascontiguousarray(updated)).cast("B"), crc)


@contextmanager
def _open(target, mode: str):
    if isinstance(target, (str, Path)):
        with open(target, mode) as f:
            yield f
    else:
        yield target


def write_snapshot(table: EmbeddingTable, dest: str | Path | BinaryIO) -> int:
    """Stream every live row of ``table`` to ``dest``; returns the number of rows.

    Rows are read in windows of the row store, so memory stays at one batch; rows updated
    while the snapshot runs may be captured before or after that update (a fuzzy snapshot:
    pause updates for a point-in-time one).
    """
    cfg, native = table.config, table._native
    schema = _schema(cfg)
    total, chained, start = 0, 0, 0
    with _open(dest, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        while True:
            ids, rows, updated, end = native.export_rows(start, BATCH_ROWS)
            if len(ids):
                crc = _crc(ids, rows, updated)
                chained = zlib.crc32(crc.to_bytes(4, "little"), chained)
                batch = pa.record_batch([
                    pa.array(ids),
                    pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), cfg.row_floats),
                    pa.array(updated),
                ], schema=schema)
                writer.write_batch(batch, custom_metadata={"crc32": str(crc), "rows": str(len(ids))})
                total += len(ids)
            if end < start + BATCH_ROWS:  # the window reached the last row ever handed out
                break
            start = end
        writer.write_batch(pa.RecordBatch.from_pylist([], schema=schema),
                           custom_metadata={"end": "1", "total_rows": str(total), "crc32": str(chained)})
    return total


def _table_config(schema: pa.Schema, where: str) -> TableConfig:
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    if meta.get("flywheel.format") != FORMAT:
        raise SnapshotError(f"{where} is not a Flywheel embedding-table snapshot (format {meta.get('flywheel.format')!r})")
    if meta.get("flywheel.version") != VERSION:
        raise SnapshotError(f"{where} has snapshot format version {meta.get('flywheel.version')!r}; "
                            f"this build reads version {VERSION}: restore it with a matching Flywheel release")
    return TableConfig.from_dict(json.loads(meta["flywheel.table"]))


def read_snapshot(src: str | Path | BinaryIO, cfg: TableConfig, native) -> int:
    """Verify ``src`` batch by batch and import its rows into ``native`` (an empty table);
    returns the number of rows. Raises SnapshotError on any mismatch."""
    where = f"snapshot {src}" if isinstance(src, (str, Path)) else "snapshot stream"
    total, chained, ended = 0, 0, False
    try:
        with _open(src, "rb") as source, pa.ipc.open_stream(source) as reader:
            saved = _table_config(reader.schema, where)
            if (saved.dim, saved.optimizer.kind) != (cfg.dim, cfg.optimizer.kind):
                raise SnapshotError(f"{where} holds table {saved.name!r} (dim {saved.dim}, {saved.optimizer.kind}); "
                                    f"cannot restore into {cfg.name!r} (dim {cfg.dim}, {cfg.optimizer.kind})")
            while True:
                try:
                    batch, meta = reader.read_next_batch_with_custom_metadata()
                except StopIteration:
                    break
                meta = {k.decode(): v.decode() for k, v in (meta or {}).items()}
                if meta.get("end") == "1":
                    if int(meta["total_rows"]) != total or int(meta["crc32"]) != chained:
                        raise SnapshotError(f"{where}: end marker says {meta['total_rows']} rows, read {total}; "
                                            "the snapshot is corrupt")
                    ended = True
                    break
                ids = batch.column(0).to_numpy()
                rows = batch.column(1).flatten().to_numpy().reshape(len(ids), cfg.row_floats)
                updated = batch.column(2).to_numpy()
                crc = _crc(ids, rows, updated)
                if str(crc) != meta.get("crc32"):
                    raise SnapshotError(f"{where}: checksum mismatch in batch {total // BATCH_ROWS} "
                                        f"(rows {total}..{total + len(ids)}); the snapshot is corrupt")
                chained = zlib.crc32(crc.to_bytes(4, "little"), chained)
                native.import_rows(ids, np.ascontiguousarray(rows), updated, 0, False)
                total += len(ids)
    except SnapshotError:
        raise
    except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
        raise SnapshotError(f"{where} is corrupt or truncated ({type(exc).__name__}: {exc}); "
                            "restore an earlier snapshot") from exc
    if not ended:
        raise SnapshotError(f"{where} is truncated: no end marker after {total} rows; restore an earlier snapshot")
    return total
