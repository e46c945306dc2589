"""Sparse state between local tables and sharded PS snapshots, both ways, on an in-memory fs."""

import fsspec
import numpy as np
import pytest

from paramserver.config import Adagrad, TableConfig
from paramserver.handover import load_snapshot, write_snapshot
from paramserver.sharding import shard_of
from paramserver.snapshots import latest, restore_shard
from paramserver.table import EmbeddingTable


def tables() -> dict[str, EmbeddingTable]:
    return {name: EmbeddingTable(TableConfig(name=name, dim=4, optimizer=Adagrad(learning_rate=0.1)))
            for name in ("user_id", "item_id")}


@pytest.mark.parametrize("shards", [1, 3])
def test_local_tables_round_trip_through_a_sharded_snapshot(shards):
    fs, root = fsspec.filesystem("memory"), f"/handover-{shards}"
    local = tables()
    ids = np.arange(1, 2001, dtype=np.uint64)
    for table in local.values():
        table.lookup(ids, insert=True)
        table.apply_gradients(ids[:500], np.ones((500, 4), np.float32))
    manifest = write_snapshot(fs, root, local, shards, source={"run": "r1"}, hdfs_uri="hdfs://nn")
    assert latest(fs, root) == manifest["snapshot_id"] and manifest["source"] == {"run": "r1"}
    assert manifest["uri"] == f"hdfs://nn{root}/{manifest['snapshot_id']}"
    # each shard holds exactly the IDs the PS's shard function gives it
    for shard in range(shards):
        part = tables()
        restore_shard(fs, root, manifest["snapshot_id"], shard, part)
        got = np.sort(np.concatenate([b[0] for b in part["user_id"].export_rows()] or [np.array([], np.uint64)]))
        np.testing.assert_array_equal(got, np.sort(ids[shard_of(ids, shards) == shard]))
    back = tables()
    load_snapshot(fs, root, manifest["snapshot_id"], back, shards)
    for name in local:
        np.testing.assert_array_equal(back[name].lookup(ids), local[name].lookup(ids))
        assert len(back[name]) == len(ids)
