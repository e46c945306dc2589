"""Training and serving parameter servers as real processes, 2 shards, synced through the
real Kafka broker."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow.flight as flight
import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from flywheel import secrets
from flywheel.config import load_config
from flywheel.secrets import kafka_args
from flywheel.stack import kafka_acls
from paramserver.client import PSClient
from paramserver.wire import encode

pytestmark = pytest.mark.integration
FLYWHEEL = Path(sys.executable).parent / "flywheel"
TABLES = ("{emb: {dim: 8, optimizer: sgd, learning_rate: 1.0, initializer: zeros},"
          " aux: {dim: 4, optimizer: sgd, learning_rate: 1.0, initializer: zeros}}")
# these tests run their own PS processes, beside the stack's own (config/test.yaml ports)
OWN_PORTS = {"FLYWHEEL__PARAMSERVER__TRAINING_PORT": "17300", "FLYWHEEL__PARAMSERVER__SERVING_PORT": "17400",
             "FLYWHEEL__PARAMSERVER__METRICS_PORT": "17800"}


class Cluster:
    """PS shard processes started with one environment (config overrides) and stopped together."""

    def __init__(self, env: dict[str, str]):
        self.env, self.procs = env, {}
        self.cfg = load_config(environ=env)

    def start(self, role: str, shard: int) -> None:
        log = open(self.cfg.stack.logs / f"test-ps-{role}-{shard}.log", "ab")
        self.procs[(role, shard)] = subprocess.Popen([str(FLYWHEEL), "ps", role, "--shard", str(shard)],
                                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def client(self, role: str) -> PSClient:
        client = PSClient.from_config(self.cfg, role=role)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.stats()
                return client
            except Exception:
                for (r, s), p in self.procs.items():
                    assert p.poll() is None, f"{r} PS shard {s} exited with {p.returncode}; see its log"
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def stop(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def cluster(stack):
    topic = f"ps-deltas-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(**kafka_args(stack))
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    # its own snapshot folder: a snapshot of the stack's (another shard count) must not be restored
    env = {**os.environ, **OWN_PORTS, "FLYWHEEL__PARAMSERVER__SHARDS": "2",
           "FLYWHEEL__PARAMSERVER__DELTAS_TOPIC": topic, "FLYWHEEL__PARAMSERVER__TABLES": TABLES,
           "FLYWHEEL__PARAMSERVER__SNAPSHOT_DIR": f"/flywheel/it-snapshots/{uuid.uuid4().hex[:8]}"}
    c = Cluster(env)
    kafka_acls.ensure(c.cfg)  # the parameter servers' grants on their own deltas topic
    yield c
    c.stop()


def wait_equal(client: PSClient, ids: np.ndarray, want: np.ndarray, timeout_s: float) -> float:
    started = time.monotonic()
    while True:
        got = client.pull("emb", ids)
        if np.array_equal(got, want):
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            diff = int((~(got == want).all(axis=1)).sum())
            raise AssertionError(f"serving PS still differs on {diff} of {len(ids)} rows after {timeout_s:.0f}s")
        time.sleep(0.05)


def test_pull_push_across_two_shards_and_sync_to_serving(cluster):
    for shard in (0, 1):
        cluster.start("training", shard)
        cluster.start("serving", shard)
    train, serve = cluster.client("training"), cluster.client("serving")
    ids = np.arange(1, 5001, dtype=np.uint64) * np.uint64(7919)
    assert not train.pull("emb", ids, insert=True).any()  # zeros init
    assert train.push("emb", ids, -np.ones((len(ids), 8), np.float32)) == len(ids)  # sgd lr 1: w = 1
    np.testing.assert_array_equal(train.pull("emb", ids), np.ones((len(ids), 8), np.float32))
    rows = [s["tables"]["emb"]["rows"] for s in train.stats()]
    assert sum(rows) == len(ids) and min(rows) > 1000, f"ids were not spread over both shards: {rows}"

    # several tables in one parallel pull (a feed's user rows): each in its callers' order
    aux = ids[:300]
    train.pull("aux", aux, insert=True)
    train.push("aux", aux, -np.arange(len(aux) * 4, dtype=np.float32).reshape(-1, 4))
    mixed = np.concatenate([ids[::-1][:700], np.array([12345], np.uint64)])  # one ID nobody wrote
    got = train.pull_many({"emb": mixed, "aux": aux[::-1]})
    np.testing.assert_array_equal(got["emb"], np.vstack([np.ones((700, 8)), np.zeros((1, 8))]).astype(np.float32))
    np.testing.assert_array_equal(got["aux"], train.pull("aux", aux)[::-1])
    assert got["aux"][-1, 3] == 3 and train.pull_many({"aux": np.array([], np.uint64)})["aux"].shape == (0, 4)
    fresh = np.arange(90_001, 90_041, dtype=np.uint64)
    train.pull_many({"aux": fresh, "emb": ids[:5]}, insert=True)  # a trainer's pull creates the rows
    assert sum(s["tables"]["aux"]["rows"] for s in train.stats()) == len(aux) + len(fresh)

    interval = cluster.cfg.paramserver.sync_interval_s
    took = wait_equal(serve, ids, np.ones((len(ids), 8), np.float32), timeout_s=2 * interval + 5)
    print(f"serving reflected the push after {took:.2f}s (sync interval {interval}s)")
    assert all(s["sync"]["bad_messages"] == 0 for s in serve.stats())


def test_a_retried_push_is_applied_once(cluster):
    cluster.start("training", 0)
    cluster.start("training", 1)
    train = cluster.client("training")
    ids = np.array([3], np.uint64)
    shard = int(__import__("paramserver.sharding", fromlist=["shard_of"]).shard_of(ids, 2)[0])
    train.pull("emb", ids, insert=True)
    body = encode({"table": "emb", "request_id": "same-request/0"}, id=ids, grad=-np.ones((1, 8), np.float32))
    first = json.loads(train.call_action(shard, "push", body))
    again = json.loads(train.call_action(shard, "push", body))
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    np.testing.assert_array_equal(train.pull("emb", ids), np.ones((1, 8), np.float32))


def test_late_serving_replica_catches_up_from_the_topic(cluster):
    cluster.start("training", 0)
    cluster.start("training", 1)
    train = cluster.client("training")
    ids = np.arange(10_000, 12_000, dtype=np.uint64)
    train.pull("emb", ids, insert=True)
    for step in range(3):
        train.push("emb", ids, -np.ones((len(ids), 8), np.float32))
    time.sleep(cluster.cfg.paramserver.sync_interval_s * 2)
    cluster.start("serving", 0)
    cluster.start("serving", 1)
    serve = cluster.client("serving")
    wait_equal(serve, ids, train.pull("emb", ids), timeout_s=30)


def test_wrong_shard_count_is_refused_with_a_clear_error(cluster):
    cluster.start("training", 0)
    cluster.start("training", 1)
    cluster.client("training")
    one_shard = PSClient([f"grpc+tcp://{cluster.cfg.stack.host}:{cluster.cfg.paramserver.training_port}"], {"emb": 8},
                         token=secrets.ps_token(cluster.cfg))
    with pytest.raises(Exception, match="disagree on paramserver.shards"):
        one_shard.pull("emb", np.arange(100, dtype=np.uint64))


def test_the_door_a_call_without_the_token_or_with_a_wrong_one_is_refused(cluster):
    for role in ("training", "serving"):
        cluster.start(role, 0)
        cluster.start(role, 1)
    members = {role: cluster.client(role) for role in ("training", "serving")}  # up, and the token works
    assert cluster.cfg.paramserver.require_token  # on by default
    for role in ("training", "serving"):
        port = cluster.cfg.paramserver.port(role, 0)
        for token in (None, "not-the-token"):
            stranger = PSClient([f"grpc+tcp://{cluster.cfg.stack.host}:{port}"], {"emb": 8}, retries=0, token=token)
            with pytest.raises(flight.FlightUnauthenticatedError, match="bearer token"):
                stranger.pull("emb", np.arange(10, dtype=np.uint64))
            stranger.close()
    for role, member in members.items():  # the shards counted the strangers
        assert [s["unauthenticated"] for s in member.stats()] == [2, 0], role


def test_snapshot_restart_and_serving_bootstrap(cluster):
    """Snapshot to HDFS, restart the training PS from it, start a serving replica from it."""
    cluster.env["FLYWHEEL__PARAMSERVER__SNAPSHOT_DIR"] = f"/flywheel/it-snapshots/{uuid.uuid4().hex[:8]}"
    cluster.cfg = load_config(environ=cluster.env)
    for shard in (0, 1):
        cluster.start("training", shard)
    train = cluster.client("training")
    ids = np.arange(20_000, 24_000, dtype=np.uint64)
    train.pull("emb", ids, insert=True)
    train.push("emb", ids, -np.ones((len(ids), 8), np.float32))
    manifest = __import__("paramserver.snapshots", fromlist=["x"]).snapshot_all(cluster.cfg, {"examples": {"0": 42}})
    assert sum(s["rows"]["emb"] for s in manifest["shards"]) == len(ids)
    assert all(s["delta_offset"] is not None and s["examples_offsets"] == {"examples": {"0": 42}}
               for s in manifest["shards"])
    train.push("emb", ids[:100], -np.ones((100, 8), np.float32))  # after the snapshot: only in the topic
    want = train.pull("emb", ids)
    cluster.stop()

    cluster.procs.clear()
    for shard in (0, 1):
        cluster.start("training", shard)
        cluster.start("serving", shard)
    restarted, serve = cluster.client("training"), cluster.client("serving")
    assert {s["restored_from"]["snapshot_id"] for s in restarted.stats()} == {manifest["snapshot_id"]}
    snap = want.copy()
    snap[:100] -= 1  # the restarted training PS has the snapshot, not the later push
    np.testing.assert_array_equal(restarted.pull("emb", ids), snap)
    restarted.push("emb", ids[-10:], -np.ones((10, 8), np.float32))  # a delta after the restart
    snap[-10:] += 1
    # serving: the snapshot, then the topic after its offset, where the restarted training PS
    # reset it to the snapshot (dropping the lost push) before shipping the new delta
    wait_equal(serve, ids, snap, timeout_s=30)


def test_corrupt_snapshot_is_refused_with_a_clear_error(cluster):
    from flywheel.hdfs import webhdfs
    from paramserver.snapshots import snapshot_all

    cluster.env["FLYWHEEL__PARAMSERVER__SNAPSHOT_DIR"] = f"/flywheel/it-snapshots/{uuid.uuid4().hex[:8]}"
    cluster.env["FLYWHEEL__PARAMSERVER__SHARDS"] = "1"
    cluster.cfg = load_config(environ=cluster.env)
    cluster.start("training", 0)
    train = cluster.client("training")
    train.pull("emb", np.arange(5000, dtype=np.uint64), insert=True)
    manifest = snapshot_all(cluster.cfg, log_to_mlflow=False)
    cluster.stop()
    fs = webhdfs(cluster.cfg)
    path = f"{cluster.cfg.paramserver.snapshot_dir}/{manifest['snapshot_id']}/shard-0/emb.arrow"
    data = bytearray(fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF
    with fs.open(path, "wb") as f:
        f.write(bytes(data))
    proc = subprocess.run([str(FLYWHEEL), "ps", "training", "--shard", "0"], env=cluster.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "emb.arrow" in proc.stderr and "corrupt" in proc.stderr


def test_training_rollback_reaches_serving(cluster):
    """Rows the training PS created after its snapshot vanish from serving when it restarts from
    that snapshot (kill -9, then restore latest): serving mirrors training, not its past."""
    from paramserver.snapshots import snapshot_all

    cluster.env["FLYWHEEL__PARAMSERVER__SNAPSHOT_DIR"] = f"/flywheel/it-snapshots/{uuid.uuid4().hex[:8]}"
    cluster.env["FLYWHEEL__PARAMSERVER__SHARDS"] = "1"
    cluster.cfg = load_config(environ=cluster.env)
    cluster.start("training", 0)
    cluster.start("serving", 0)
    train, serve = cluster.client("training"), cluster.client("serving")
    kept, lost = np.arange(1, 1001, dtype=np.uint64), np.arange(5001, 5501, dtype=np.uint64)
    train.pull("emb", kept, insert=True)
    train.push("emb", kept, -np.ones((len(kept), 8), np.float32))
    snapshot_all(cluster.cfg, log_to_mlflow=False)
    train.pull("emb", lost, insert=True)  # after the snapshot
    train.push("emb", lost, -np.ones((len(lost), 8), np.float32))
    train.push("emb", kept, -np.ones((len(kept), 8), np.float32))
    both = np.concatenate([kept, lost])
    wait_equal(serve, both, np.concatenate([2 * np.ones((len(kept), 8)), np.ones((len(lost), 8))]).astype(np.float32),
               timeout_s=30)

    cluster.procs[("training", 0)].send_signal(signal.SIGKILL)
    cluster.procs[("training", 0)].wait(timeout=10)
    cluster.start("training", 0)
    cluster.client("training")
    want = np.concatenate([np.ones((len(kept), 8)), np.zeros((len(lost), 8))]).astype(np.float32)
    wait_equal(serve, both, want, timeout_s=30)
    (stats,) = serve.stats()
    assert stats["tables"]["emb"]["rows"] == len(kept)
    assert stats["sync"]["resets_applied"] >= 1 and stats["sync"]["bad_messages"] == 0


def test_a_reset_to_a_deleted_snapshot_falls_back_to_the_newest(cluster):
    """A replica reading the topic from the start meets a reset whose snapshot is gone: after
    a few retries it loads the newest snapshot and converges to training."""
    from flywheel.hdfs import webhdfs
    from paramserver.snapshots import snapshot_all

    cluster.env["FLYWHEEL__PARAMSERVER__SNAPSHOT_DIR"] = f"/flywheel/it-snapshots/{uuid.uuid4().hex[:8]}"
    cluster.env["FLYWHEEL__PARAMSERVER__SHARDS"] = "1"
    cluster.cfg = load_config(environ=cluster.env)
    cluster.start("training", 0)
    train = cluster.client("training")
    ids = np.arange(1, 801, dtype=np.uint64)
    train.pull("emb", ids, insert=True)
    train.push("emb", ids, -np.ones((len(ids), 8), np.float32))
    first = snapshot_all(cluster.cfg, log_to_mlflow=False)
    cluster.procs[("training", 0)].send_signal(signal.SIGKILL)  # restart: ships reset(first)
    cluster.procs[("training", 0)].wait(timeout=10)
    cluster.start("training", 0)
    train = cluster.client("training")
    train.push("emb", ids[:50], -np.ones((50, 8), np.float32))
    snapshot_all(cluster.cfg, log_to_mlflow=False)
    webhdfs(cluster.cfg).rm(f"{cluster.cfg.paramserver.snapshot_dir}/{first['snapshot_id']}", recursive=True)
    train.push("emb", ids[-50:], -np.ones((50, 8), np.float32))  # after the newest snapshot

    serve_env = {**cluster.env}
    proc = subprocess.Popen([str(FLYWHEEL), "ps", "serving", "--shard", "0", "--restore", "none"], env=serve_env,
                            stdout=open(cluster.cfg.stack.logs / "test-ps-serving-fallback.log", "ab"),
                            stderr=subprocess.STDOUT)
    cluster.procs[("serving", 0)] = proc
    serve = cluster.client("serving")
    wait_equal(serve, ids, train.pull("emb", ids), timeout_s=60)
    (stats,) = serve.stats()
    from paramserver.sync import RESET_ATTEMPTS

    assert stats["sync"]["reset_retries"] == RESET_ATTEMPTS and stats["sync"]["resets_applied"] >= 1
