"""Sparse state between batch training and the parameter servers, through snapshots on HDFS.

A batch trainer holds every table in one process (``LocalTables``); the PS splits them into
shards. :func:`load_snapshot` merges a PS snapshot's shards into local tables (warm start);
:func:`write_snapshot` splits local tables by the PS's shard function into a complete
snapshot that the training PS can restore (the ``restore`` action), which also resets the
serving PS to it (see paramserver/sync.py). With one shard both are a plain copy and keep
the admission counts; with several, the merged tables start new admission counts.

Example::

    fs = webhdfs(cfg)
    manifest = load_snapshot(fs, root, "20261124T014655Z-3fa9c1", local.tables, shards=1)
    ...train...
    manifest = write_snapshot(fs, root, local.tables, shards=1, source={"mlflow_run_id": run_id})
"""

from __future__ import annotations

import json

from paramserver.sharding import shard_of
from paramserver.snapshots import COMPLETE, new_snapshot_id, restore_shard, write_shard
from paramserver.table import EmbeddingTable


def _empty_like(tables: dict[str, EmbeddingTable]) -> dict[str, EmbeddingTable]:
    return {name: EmbeddingTable(table.config) for name, table in tables.items()}


def load_snapshot(fs, root: str, snapshot_id: str, tables: dict[str, EmbeddingTable], shards: int) -> dict:
    """Replace ``tables`` with the snapshot's rows (every shard); returns its complete manifest.

    Raises:
      SnapshotError: a shard file is missing, corrupt or disagrees with its manifest.
      FileNotFoundError: the snapshot is not complete.
    """
    manifest = json.loads(fs.cat_file(f"{root}/{snapshot_id}/{COMPLETE}"))
    if shards == 1:
        restore_shard(fs, root, snapshot_id, 0, tables)
        return manifest
    for table in tables.values():
        table.clear()
    for shard in range(shards):
        part = _empty_like(tables)
        restore_shard(fs, root, snapshot_id, shard, part)
        for name, table in part.items():
            for ids, rows, updated in table.export_rows():
                tables[name].import_rows(ids, rows, updated)
    return manifest


def write_snapshot(fs, root: str, tables: dict[str, EmbeddingTable], shards: int, source: dict,
                   hdfs_uri: str = "") -> dict:
    """Write ``tables`` as a complete snapshot split into ``shards``; returns its manifest.

    Args:
      source: lineage recorded in the manifest (e.g. the MLflow run, the data dates).
      hdfs_uri: prefix of the ``uri`` in the manifest (``hdfs://host:port``).
    """
    snapshot_id = new_snapshot_id()
    if shards == 1:
        parts = [tables]
    else:
        parts = [_empty_like(tables) for _ in range(shards)]
        for name, table in tables.items():
            for ids, rows, updated in table.export_rows():
                owner = shard_of(ids, shards)
                for shard in range(shards):
                    mine = owner == shard
                    if mine.any():
                        parts[shard][name].import_rows(ids[mine], rows[mine], updated[mine])
    shard_manifests = [write_shard(fs, root, snapshot_id, shard, part, delta_offset=None, examples_offsets=None)
                       for shard, part in enumerate(parts)]
    manifest = {"snapshot_id": snapshot_id, "uri": f"{hdfs_uri}{root}/{snapshot_id}", "shards": shard_manifests,
                "tables": sorted(tables), "source": source}
    with fs.open(f"{root}/{snapshot_id}/{COMPLETE}", "wb") as f:
        f.write(json.dumps(manifest, indent=2).encode())
    return manifest
