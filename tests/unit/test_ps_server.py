"""The parameter-server shard and its client over real Arrow Flight on loopback (no Kafka:
sync is tested in tests/integration/test_paramserver.py)."""

import threading

import numpy as np
import pyarrow.flight as flight
import pytest

from paramserver.client import PSClient
from paramserver.config import Sgd, TableConfig
from paramserver.server import ParamServer
from paramserver.sharding import shard_of, split
from paramserver.table import EmbeddingTable


def start(role: str, shards: int = 1):
    servers = []
    for shard in range(shards):
        tables = {"emb": EmbeddingTable(TableConfig(name="emb", dim=4, optimizer=Sgd(1.0), initializer="zeros"))}
        server = ParamServer("grpc+tcp://127.0.0.1:0", tables, role, shard, shards)
        threading.Thread(target=server.serve, daemon=True).start()
        servers.append(server)
    client = PSClient([f"grpc+tcp://127.0.0.1:{s.port}" for s in servers], {"emb": 4}, timeout_s=5, retries=1)
    return servers, client


def test_sharding_is_stable_and_covers_every_id():
    ids = np.arange(50_000, dtype=np.uint64) * np.uint64(2654435761)
    parts = split(ids, 4)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(ids)))
    assert min(len(p) for p in parts) > 11_000
    np.testing.assert_array_equal(shard_of(ids, 4), shard_of(ids.copy(), 4))
    assert shard_of(np.array([12345], np.uint64), 3)[0] == 0  # pinned: changing the hash moves every row


def test_pull_push_round_trip_over_three_shards():
    servers, client = start("training", 3)
    ids = np.arange(1, 3001, dtype=np.uint64)
    client.pull("emb", ids, insert=True)
    assert client.push("emb", ids, -np.ones((3000, 4), np.float32)) == 3000
    np.testing.assert_array_equal(client.pull("emb", ids), np.ones((3000, 4), np.float32))
    assert [len(s.tables["emb"]) for s in servers] == [len(p) for p in split(ids, 3)]
    for s in servers:
        s.shutdown()


def test_serving_role_refuses_pushes_and_unknown_tables_are_named():
    servers, client = start("serving")
    with pytest.raises(flight.FlightServerError, match="push goes to the training PS"):
        client.push("emb", np.array([1], np.uint64), np.ones((1, 4), np.float32))
    client.dims["nope"] = 4
    with pytest.raises(flight.FlightServerError, match="unknown table 'nope'.*tables: \\['emb'\\]"):
        client.pull("nope", np.array([1], np.uint64))
    servers[0].shutdown()


def test_concurrent_retries_of_one_push_apply_it_once():
    servers, client = start("training")
    ids = np.arange(1, 20_001, dtype=np.uint64)
    client.pull("emb", ids, insert=True)
    from paramserver.wire import encode

    body = encode({"table": "emb", "request_id": "r-1/0"}, id=ids, grad=-np.ones((len(ids), 4), np.float32))
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.call_action(0, "push", body))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted('"duplicate": true' in r.decode() for r in results) == [False, True, True, True]
    np.testing.assert_array_equal(client.pull("emb", ids), np.ones((len(ids), 4), np.float32))
    servers[0].shutdown()


def test_pull_many_reads_and_inserts_several_tables_over_three_shards():
    servers = []
    for shard in range(3):
        tables = {name: EmbeddingTable(TableConfig(name=name, dim=dim, optimizer=Sgd(1.0), initializer="zeros"))
                  for name, dim in (("emb", 4), ("aux", 2))}
        servers.append(ParamServer("grpc+tcp://127.0.0.1:0", tables, "training", shard, 3))
        threading.Thread(target=servers[-1].serve, daemon=True).start()
    client = PSClient([f"grpc+tcp://127.0.0.1:{s.port}" for s in servers], {"emb": 4, "aux": 2, "item": 3}, timeout_s=5,
                      retries=1)
    emb, aux = np.arange(1, 301, dtype=np.uint64), np.arange(1000, 1050, dtype=np.uint64)
    client.pull_many({"emb": emb, "aux": aux}, insert=True)
    client.push("emb", emb, -np.repeat(emb[:, None], 4, axis=1).astype(np.float32))
    client.push("aux", aux, -np.repeat(aux[:, None], 2, axis=1).astype(np.float32))
    got = client.pull_many({"emb": emb[::-1], "aux": aux[::7], "item": np.array([], np.uint64)})
    np.testing.assert_array_equal(got["emb"][:, 0], emb[::-1].astype(np.float32))
    np.testing.assert_array_equal(got["aux"], np.repeat(aux[::7, None], 2, axis=1).astype(np.float32))
    assert got["item"].shape == (0, 3)  # nothing asked of a table: no call, an empty answer
    assert [len(s.tables["aux"]) for s in servers] == [len(p) for p in split(aux, 3)]
    for s in servers:
        s.shutdown()


def test_with_a_token_every_call_without_it_or_with_a_wrong_one_is_refused_and_counted():
    tables = {"emb": EmbeddingTable(TableConfig(name="emb", dim=4, optimizer=Sgd(1.0), initializer="zeros"))}
    server = ParamServer("grpc+tcp://127.0.0.1:0", tables, "serving", 0, 1, token="s3cret")
    threading.Thread(target=server.serve, daemon=True).start()
    address = [f"grpc+tcp://127.0.0.1:{server.port}"]
    ids = np.arange(1, 5, dtype=np.uint64)
    try:
        for token in (None, "wrong"):
            stranger = PSClient(address, {"emb": 4}, timeout_s=5, retries=0, token=token)
            with pytest.raises(flight.FlightUnauthenticatedError, match="FLYWHEEL_PS_TOKEN"):
                stranger.pull("emb", ids)
            with pytest.raises(flight.FlightUnauthenticatedError):
                stranger.stats()
            stranger.close()
        member = PSClient(address, {"emb": 4}, timeout_s=5, retries=0, token="s3cret")
        assert member.pull("emb", ids).shape == (4, 4)
        [stats] = member.stats()
        assert stats["unauthenticated"] == 4
        member.close()
    finally:
        server.shutdown()
