"""The training shard's ledger of applied examples: batches named by their offsets, overlaps
recorded as doubles per table, a restore forgets, and the check against the trainer's position
finds the offsets never applied and the ones applied twice."""

import numpy as np
import pyarrow.flight as flight

from paramserver.client import PSClient
from paramserver.config import Adagrad, TableConfig
from paramserver.ledger import Ledger, batch_key, gaps_and_doubles, parse
from paramserver.server import ParamServer
from paramserver.table import EmbeddingTable


def test_batch_keys_round_trip_and_other_request_ids_are_ignored():
    key = batch_key("examples", {1: (10, 20), 0: (5, 9), 2: (7, 7)})
    assert key == "examples@0:5-9,1:10-20"  # an empty range is left out
    assert parse(f"{key}#user_id/3") == ("examples", "user_id", {0: (5, 9), 1: (10, 20)})
    assert parse("4f1c2a9e/0") is None and parse("examples@#user_id/0") is None


def test_overlapping_pushes_of_one_table_are_doubles_and_other_tables_are_not():
    ledger = Ledger()
    for key in ("examples@0:0-10#user_id/0", "examples@0:10-20#user_id/0", "examples@0:0-20#item_id/0",
                "examples@0:15-25#user_id/0"):
        ledger.record(key)
    s = ledger.summary()
    assert s["ranges"] == {"item_id": {"examples@0": [[0, 20]]}, "user_id": {"examples@0": [[0, 25]]}}
    assert s["doubles"] == [{"table": "user_id", "topic": "examples", "partition": 0, "offsets": [15, 20]}]
    ledger.reset()
    assert ledger.summary() == {"ranges": {}, "doubles": [], "double_count": 0}


def shard(ledger: Ledger, restored_offsets=None) -> dict:
    restored = {"examples_offsets": {"examples": restored_offsets}} if restored_offsets is not None else None
    return {"ledger": ledger.summary(), "restored_from": restored}


def test_gaps_are_offsets_no_shard_applied_between_the_snapshot_and_the_position():
    a, b = Ledger(), Ledger()
    a.record("examples@0:100-150#user_id/0")
    b.record("examples@0:150-170,1:0-40#item_id/1")  # shard 1 carried this batch alone
    a.record("examples@0:180-200#user_id/0")
    gaps, doubles = gaps_and_doubles([shard(a, {"0": 100, "1": 0}), shard(b, {"0": 100, "1": 0})], "examples",
                                     {0: 200, 1: 50})
    assert gaps == [{"partition": 0, "offsets": [170, 180]}, {"partition": 1, "offsets": [40, 50]}]
    assert doubles == []
    gaps, _ = gaps_and_doubles([shard(a), shard(b)], "examples", {0: 200})  # no snapshot offsets: from the first
    assert gaps == [{"partition": 0, "offsets": [170, 180]}]


def test_a_ps_shard_records_the_trainers_pushes_and_forgets_them_on_restore(tmp_path):
    table = EmbeddingTable(TableConfig(name="user_id", dim=4, optimizer=Adagrad(0.1), seed=1))
    server = ParamServer("grpc+tcp://127.0.0.1:0", {"user_id": table}, "training", 0, 1)
    server.restorer = lambda snapshot_id: None
    client = PSClient([f"grpc+tcp://127.0.0.1:{server.port}"], {"user_id": 4})
    try:
        ids = np.array([1, 2], np.uint64)
        client.pull("user_id", ids, insert=True)
        grads = np.ones((2, 4), np.float32)
        client.push("user_id", ids, grads, request_id="examples@0:0-8#user_id")
        client.push("user_id", ids, grads, request_id="examples@0:4-12#user_id")  # overlaps: a double
        client.push("user_id", ids, grads)  # not the trainer's: not in the ledger
        ledger = client.stats()[0]["ledger"]
        assert ledger["ranges"] == {"user_id": {"examples@0": [[0, 12]]}} and ledger["double_count"] == 1
        list(client._clients[0].do_action(flight.Action("restore", b'{"snapshot_id": "none"}')))
        assert client.stats()[0]["ledger"]["ranges"] == {}
    finally:
        client.close()
        server.shutdown()
