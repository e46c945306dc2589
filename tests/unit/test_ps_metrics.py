"""A PS shard's Prometheus endpoint reports its live state: rows, rates and sync status, over
real HTTP from a real shard."""

import socket
import threading
import time

import numpy as np

from flywheel.prometheus import scrape, value
from paramserver.client import PSClient
from paramserver.config import Sgd, TableConfig
from paramserver.metrics import serve_metrics
from paramserver.server import ParamServer
from paramserver.table import EmbeddingTable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_follow_the_shard():
    tables = {"emb": EmbeddingTable(TableConfig(name="emb", dim=4, optimizer=Sgd(1.0), initializer="zeros"))}
    server = ParamServer("grpc+tcp://127.0.0.1:0", tables, "training", 0, 1)
    threading.Thread(target=server.serve, daemon=True).start()
    port = free_port()
    serve_metrics(server, "127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/metrics"
    before = scrape(url)
    assert value(before, "flywheel_ps_up", role="training", shard="0") == 1
    assert value(before, "flywheel_ps_rows", table="emb") == 0

    client = PSClient([f"grpc+tcp://127.0.0.1:{server.port}"], {"emb": 4}, timeout_s=5, retries=1)
    client.pull("emb", np.arange(1, 101, dtype=np.uint64), insert=True)
    server.sync_status.update(role="publisher", rows_shipped=7, last_sync=time.time())
    after = scrape(url)
    assert value(after, "flywheel_ps_rows", table="emb") == 100
    assert value(after, "flywheel_ps_admitted_total", table="emb") == 100
    assert value(after, "flywheel_ps_pulled_ids_per_second") > 0
    assert value(after, "flywheel_ps_sync_rows_total") == 7
    assert time.time() - value(after, "flywheel_ps_sync_last_timestamp_seconds") < 60
    server.shutdown()
