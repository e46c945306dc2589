"""The demo page's panels read each component's real metrics endpoint over HTTP (real PS
shards; a Prometheus endpoint holding the trainer's metric names) and name every component that
does not answer, without waiting past their timeouts."""

import socket
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from flywheel.config import load_config
from paramserver.config import Sgd, TableConfig
from paramserver.metrics import serve_metrics
from paramserver.server import ParamServer
from paramserver.table import EmbeddingTable
from serving.metrics import ServingMetrics
from serving.panels import Panels
from tests.serving_models import StaticLoader


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def ps_shard(role: str, host: str, port: int) -> ParamServer:
    tables = {"emb": EmbeddingTable(TableConfig(name="emb", dim=4, optimizer=Sgd(1.0), initializer="zeros"))}
    server = ParamServer("grpc+tcp://127.0.0.1:0", tables, role, 0, 1)
    threading.Thread(target=server.serve, daemon=True).start()
    server.metrics_http = serve_metrics(server, host, port)
    return server


def test_panels_fill_from_live_endpoints_and_name_what_is_down(tmp_path):
    base = 40_000 + (time.time_ns() // 1000) % 9_000  # metrics_port .. + 64: the two PS shards
    trainer_port, simulator_port, flink_port = free_ports(3)  # nothing listens on the last two
    cfg = load_config(files=[], environ={
        "FLYWHEEL__STACK__STATE_DIR": str(tmp_path), "FLYWHEEL__PARAMSERVER__METRICS_PORT": str(base),
        "FLYWHEEL__ONLINE__METRICS_PORT": str(trainer_port), "FLYWHEEL__SIMULATOR__METRICS_PORT": str(simulator_port),
        "FLYWHEEL__FLINK__REST_PORT": str(flink_port)})
    training = ps_shard("training", "127.0.0.1", cfg.paramserver.metrics_port_of("training", 0))
    serving = ps_shard("serving", "127.0.0.1", cfg.paramserver.metrics_port_of("serving", 0))
    training.sync_status.update(role="publisher", rows_shipped=3, last_sync=time.time() - 2)
    serving.sync_status.update(role="subscriber", rows_applied=3, last_applied=time.time() - 1, lag=0, bad_messages=0)

    registry = CollectorRegistry()  # the online trainer's metric names, on a real endpoint
    Gauge("flywheel_online_examples_per_second", "", registry=registry).set(5123)
    Counter("flywheel_online_examples", "", registry=registry).inc(90_000)
    Gauge("flywheel_online_rolling_auc", "", ["task"], registry=registry).labels("click").set(0.71)
    Gauge("flywheel_online_last_batch_timestamp_seconds", "", registry=registry).set(time.time())
    arm_rate = Gauge("flywheel_online_arm_rate", "", ["arm", "task", "stat"], registry=registry)
    for stat, v in (("rate", 0.052), ("lo", 0.049), ("hi", 0.0553)):
        arm_rate.labels("champion", "like", stat).set(v)
    Gauge("flywheel_online_arm_impressions", "", ["arm"], registry=registry).labels("champion").set(1234.4)
    http, _ = start_http_server(trainer_port, addr="127.0.0.1", registry=registry)

    own = ServingMetrics()
    own.events.labels("accepted").inc(10)
    panels = Panels(cfg, own.samples, StaticLoader(None), "flywheel-joiner", min_interval_s=0)
    started = time.monotonic()
    first = {p["name"]: p for p in panels.read()["panels"]}
    assert time.monotonic() - started < 8  # the page never hangs on a component that is down
    own.events.labels("accepted").inc(30)
    time.sleep(0.5)
    got = panels.read()
    by = {p["name"]: p for p in got["panels"]}
    assert set(by) == {"collector", "joiner", "trainer", "arms", "sync", "freshness", "champion"} == set(first)

    assert by["collector"]["up"] and by["collector"]["figures"]["events_accepted"] == 40
    assert by["collector"]["figures"]["events_per_s"] > 0  # 30 more over the window
    t = by["trainer"]
    assert t["up"] and t["figures"]["examples_per_s"] == 5123 and t["figures"]["auc_click"] == 0.71
    arms = by["arms"]["figures"]  # the configured split, and the rates the trainer measured
    assert arms["champion_users_share"] == cfg.serving.traffic["champion"] and arms["champion_impressions"] == 1234
    assert arms["champion_like_rate"] == "5.20% (4.90%–5.53%)" and "champion_click_rate" not in arms
    s = by["sync"]
    assert s["up"] and s["figures"]["lag_messages"] == 0 and 0.5 < s["figures"]["last_applied_age_s"] < 30
    for name, who in (("joiner", "Joiner (Flink)"), ("freshness", "Simulator")):
        assert not by[name]["up"] and by[name]["error"].startswith(who), by[name]
    assert not by["champion"]["up"] and "make retrain" in by["champion"]["error"]
    assert got["links"]["Flink"].endswith(f":{flink_port}")

    http.shutdown()  # the trainer stops: its panel says so, by name
    http.server_close()
    serving.shutdown()  # a serving shard ends, and its endpoint with it
    serving.metrics_http.shutdown()
    serving.metrics_http.server_close()
    by = {p["name"]: p for p in panels.read()["panels"]}
    assert not by["trainer"]["up"] and by["trainer"]["error"].startswith("Online trainer is down")
    assert not by["arms"]["up"] and by["arms"]["error"].startswith("A/B test")
    assert not by["sync"]["up"] and "ps-serving-0" in by["sync"]["error"]
    assert by["collector"]["up"]
    training.shutdown()


def test_join_latency_is_the_window_mean_once_flink_reports_its_counters(tmp_path, monkeypatch):
    """Flink's REST API (not under test here) reports the join counters only once they were
    first updated: the first reads lack them, and no read may fail for it."""
    readings = iter([
        {"state": "RUNNING", "positives": 0.0, "emitted": 0.0},
        {"state": "RUNNING", "positives": 5.0, "emitted": 5.0, "latency_ms_sum": 500.0, "latency_joins": 5.0},
        {"state": "RUNNING", "positives": 9.0, "emitted": 9.0, "latency_ms_sum": 900.0, "latency_joins": 9.0},
    ])
    monkeypatch.setattr("serving.panels.flink_join", lambda cfg, name: next(readings))
    monkeypatch.setattr("serving.panels.fetch_samples", lambda url: [])
    cfg = load_config(files=[], environ={"FLYWHEEL__STACK__STATE_DIR": str(tmp_path)})
    panels = Panels(cfg, ServingMetrics().samples, StaticLoader(None), "flywheel-joiner", min_interval_s=0)
    joiner = [next(p for p in panels.read()["panels"] if p["name"] == "joiner") for _ in range(3)]
    assert all(p["up"] for p in joiner)
    assert [p["figures"]["join_latency_ms"] for p in joiner] == [None, 100.0, 100.0]
    assert joiner[2]["figures"]["examples_per_s"] > 0


def test_a_panel_that_fails_is_shown_as_failed_and_the_others_still_fill(tmp_path, monkeypatch):
    monkeypatch.setattr("serving.panels.flink_join", lambda cfg, name: {"state": "RUNNING"})  # no "emitted"
    monkeypatch.setattr("serving.panels.fetch_samples", lambda url: [])
    cfg = load_config(files=[], environ={"FLYWHEEL__STACK__STATE_DIR": str(tmp_path)})
    by = {p["name"]: p for p in Panels(cfg, ServingMetrics().samples, StaticLoader(None), "j").read()["panels"]}
    assert not by["joiner"]["up"] and "could not be read (KeyError" in by["joiner"]["error"]
    assert by["collector"]["up"] and by["trainer"]["up"]
