"""Inserting pulls are counted toward admission once per request id: a client retry after a
timeout, or concurrent copies of one request, only read (real Arrow Flight on loopback)."""

import threading

import numpy as np
import pyarrow.flight as flight
import pytest

from paramserver.client import PSClient
from paramserver.config import TableConfig
from paramserver.server import ParamServer
from paramserver.table import EmbeddingTable
from paramserver.wire import decode, encode

IDS = np.arange(1, 101, dtype=np.uint64)


@pytest.fixture
def shard():
    """One training shard whose table admits an ID at its second sighting, and a client."""
    table = EmbeddingTable(TableConfig(name="emb", dim=4, admit_after=2, sketch_width=1 << 16))
    server = ParamServer("grpc+tcp://127.0.0.1:0", {"emb": table}, "training", 0, 1)
    threading.Thread(target=server.serve, daemon=True).start()
    client = PSClient([f"grpc+tcp://127.0.0.1:{server.port}"], {"emb": 4}, timeout_s=5, retries=1)
    yield table, client
    client.close()
    server.shutdown()


def pull(client: PSClient, request_id: str) -> np.ndarray:
    body = encode({"table": "emb", "insert": "1", "request_id": request_id}, id=IDS)
    return decode(client.call_action(0, "pull", body))[1]["row"]


def test_a_repeated_inserting_pull_reads_without_counting_again(shard):
    table, client = shard
    assert not pull(client, "p-1/0").any() and not pull(client, "p-1/0").any()
    assert len(table) == 0, "the repeat counted the IDs a second time and admitted them"
    admitted = pull(client, "p-2/0")
    assert admitted.any(axis=1).all() and table.stats()["admitted"] == 100
    np.testing.assert_array_equal(pull(client, "p-2/0"), admitted)  # the admitting pull's retry: same rows
    assert table.stats()["admitted"] == 100


def test_concurrent_copies_of_one_inserting_pull_count_once(shard):
    table, client = shard
    results = []
    threads = [threading.Thread(target=lambda: results.append(pull(client, "p-1/0"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(table) == 0
    assert table.stats()["tracked_ids"] == 100


class _TimesOutOnce:
    """A Flight client whose first call reaches the server but whose answer is lost."""

    def __init__(self, inner: flight.FlightClient):
        self.inner, self.calls = inner, 0

    def do_action(self, action, options):
        results = list(self.inner.do_action(action, options))
        self.calls += 1
        if self.calls == 1:
            raise flight.FlightUnavailableError("answer lost")
        return results

    def close(self):
        self.inner.close()


def test_the_client_retries_an_inserting_pull_under_the_same_request_id(shard):
    table, client = shard
    client._clients[0] = flaky = _TimesOutOnce(client._clients[0])
    assert not client.pull("emb", IDS, insert=True).any()
    assert flaky.calls == 2 and len(table) == 0, "the retry counted the IDs again"
    assert client.pull("emb", IDS, insert=True).any(axis=1).all()
