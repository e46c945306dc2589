"""Benchmark of the parameter servers: training and serving shard 0 as real processes (1
shard, table ``emb`` dim 64 Adagrad) synced through Kafka on the bench ports (config/bench.yaml,
sync every 0.5 s); each figure against a baseline from the same run:

* pull+push of 4,096 unique IDs over loopback vs lookup+apply_gradients in-process, p50/p99;
* sync of 100K touched rows (from the sync tick, and from the last push, until the serving
  shard applied them all) vs in-process export_delta + import_rows;
* serving pull p50/p99 while a 100K-row delta is applied vs idle.

The broker is started and stopped by the run (one already running on the bench ports is reused
and left running); each run uses a fresh deltas topic and deletes it.

Run: ``make bench`` (or ``.venv/ml/bin/python bench/paramserver.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flywheel.secrets import kafka_args  # noqa: E402
from report import Figure, report  # noqa: E402

from flywheel.config import REPO_ROOT, load_config  # noqa: E402
from flywheel.stack import control, kafka_acls  # noqa: E402
from flywheel.stack.supervisor import Supervisor  # noqa: E402
from paramserver.client import PSClient  # noqa: E402
from paramserver.service import build_tables  # noqa: E402

DIM, BATCH, SERVING_BATCH = 64, 4096, 1024
TABLES = f"{{emb: {{dim: {DIM}, optimizer: adagrad, learning_rate: 0.05}}}}"
FLYWHEEL = Path(sys.executable).parent / "flywheel"


@contextmanager
def broker_topic(cfg):
    """Kafka for ``cfg`` (a running one is reused and left running, else started and stopped)
    with a fresh one-partition deltas topic, deleted at the end; yields the topic's name."""
    running = Supervisor(cfg).info().get("kafka", {}).get("statename") == "RUNNING"
    control.up(cfg, only=["kafka"], echo=lambda msg: print(msg, flush=True))
    name, admin = f"ps-deltas-bench-{uuid.uuid4().hex[:8]}", None
    try:
        admin = KafkaAdminClient(**kafka_args(cfg))
        admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
        # the parameter servers' own login (kafka.acls) ships and applies deltas on it
        kafka_acls.allow(cfg, {kafka_acls.Grant("paramserver", "TOPIC", name, op) for op in ("READ", "WRITE")})
        yield name
    finally:
        if admin:
            admin.delete_topics([name])
            admin.close()
        if not running:  # stopped before Kafka removed the deleted topic's files: remove them
            control.down(cfg)
            for leftover in (cfg.stack.root / "kafka" / "data").glob(f"{name}-*-delete"):
                shutil.rmtree(leftover, ignore_errors=True)


class Shards:
    """Training and serving shard 0 as `flywheel ps` processes (empty: no snapshot restored),
    logs in the state dir."""

    def __init__(self, env: dict[str, str]):
        self.cfg, self.procs, self.logs = load_config(environ=env), [], []
        for role in ("training", "serving"):
            self.logs.append(open(self.cfg.stack.logs / f"bench-ps-{role}.log", "wb"))
            self.procs.append(subprocess.Popen([str(FLYWHEEL), "ps", role, "--shard", "0", "--restore", "none"],
                                               env=env, cwd=REPO_ROOT, stdout=self.logs[-1], stderr=subprocess.STDOUT))
        self.train, self.serve = self._client("training"), self._client("serving")

    def _client(self, role: str, timeout_s: float = 60) -> PSClient:
        client, deadline = PSClient.from_config(self.cfg, role=role), time.monotonic() + timeout_s
        while True:
            try:
                client.stats()
                return client
            except Exception:
                if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                    raise RuntimeError(f"{role} PS did not come up; see {self.cfg.stack.logs}/bench-ps-*.log")
                time.sleep(0.2)

    def sync(self, role: str) -> dict:
        """The shard's sync status (publisher on training, subscriber on serving)."""
        return (self.train if role == "training" else self.serve).stats()[0]["sync"]

    def after_tick(self) -> float:
        """Wait for the training shard's next sync tick to finish; returns its ``last_sync``
        (wall clock). The publisher then sleeps ``sync_interval_s`` before exporting again."""
        tick = self.sync("training")["last_sync"]
        while (last := self.sync("training")["last_sync"]) == tick:
            time.sleep(0.002)
        return last

    def caught_up(self, timeout_s: float = 120) -> int:
        """Wait for a whole sync tick that starts after now, then for serving to have applied
        every row shipped so far; returns serving's ``rows_applied``."""
        self.after_tick()  # the tick under way may have exported before our last write
        self.after_tick()
        deadline = time.monotonic() + timeout_s
        while (sub := self.sync("serving"))["rows_applied"] != self.sync("training")["rows_shipped"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"serving did not catch up within {timeout_s}s: {sub}")
            time.sleep(0.02)
        return sub["rows_applied"]

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p, log in zip(self.procs, self.logs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
            log.close()


def latencies(fn, batches: list, samples: int, warmup: int = 20) -> np.ndarray:
    """Seconds per call of ``fn(batch)``, cycling through ``batches``, after ``warmup`` calls."""
    out = []
    for i in range(warmup + samples):
        t0 = time.perf_counter()
        fn(batches[i % len(batches)])
        out.append(time.perf_counter() - t0)
    return np.array(out[warmup:])


def ms(lat: np.ndarray, q: float) -> float:
    """The ``q``-th percentile of ``lat`` (seconds), in milliseconds."""
    return float(np.percentile(lat, q) * 1e3)


def push_all(client: PSClient, ids: np.ndarray, grads: np.ndarray) -> None:
    """``grads`` [len(ids), DIM] for ``ids``, in trainer-sized batches of BATCH."""
    for s in range(0, len(ids), BATCH):
        client.push("emb", ids[s:s + BATCH], grads[s:s + BATCH])


def local_sync_rate(cfg, ids: np.ndarray, grads: np.ndarray, repeat: int = 3) -> float:
    """Rows/s of in-process export_delta + import_rows for updates of existing rows (best of
    ``repeat``), with the tables the PS processes build."""
    train, serve = build_tables(cfg, "training")["emb"], build_tables(cfg, "serving")["emb"]
    train.lookup(ids, insert=True)
    serve.import_rows(ids, train.export_delta().rows)
    best = float("inf")
    for _ in range(repeat):
        train.apply_gradients(ids, grads)
        t0 = time.perf_counter()
        delta = train.export_delta()
        serve.import_rows(delta.ids, delta.rows)
        best = min(best, time.perf_counter() - t0)
    return len(ids) / best


def sync_round(shards: Shards, ids: np.ndarray, grads: np.ndarray, interval: float, tries: int = 3) -> dict:
    """Push gradients for ``ids`` right after a sync tick, so that the next tick ships them all
    (again if the pushes outlasted the interval: the delta was split over two ticks)."""
    for _ in range(tries):
        base = shards.caught_up()
        start = shards.after_tick() + interval
        push_all(shards.train, ids, grads)
        if (pushed := time.time()) < start - 0.01:
            break
    else:
        raise RuntimeError(f"pushing {len(ids)} rows took longer than the sync interval {interval}s, {tries} times")
    while (sub := shards.sync("serving"))["rows_applied"] < base + len(ids):
        time.sleep(0.005)
    if not np.array_equal(shards.serve.pull("emb", ids), shards.train.pull("emb", ids)):
        raise AssertionError("serving rows differ from training rows after the sync")
    shipped, done = shards.sync("training")["last_sync"], sub["last_applied"]
    return {"rows_per_s": len(ids) / (done - start), "push_done_rows_per_s": len(ids) / (done - pushed),
            "tick_to_applied_s": done - start, "export_and_produce_s": shipped - start}


def serving_samples(shards: Shards, batches: list, done) -> list[tuple[int, float]]:
    """(serving rows_applied just before, seconds) per serving pull, until ``done(applied, n)``."""
    out = []
    while not done(applied := shards.sync("serving")["rows_applied"], len(out)):
        t0 = time.perf_counter()
        shards.serve.pull("emb", batches[len(out) % len(batches)])
        out.append((applied, time.perf_counter() - t0))
    return out


def during_sync(shards: Shards, ids, grads, batches, samples: int, max_rounds: int = 20) -> tuple[np.ndarray, int]:
    """Serving pull latencies taken while serving applies a delta of ``ids`` (after its first
    message, before its last), over as many pushes of ``ids`` as it takes; and the rounds."""
    out: list[float] = []
    for rounds in range(1, max_rounds + 1):
        base = shards.caught_up()
        shards.after_tick()
        push_all(shards.train, ids, grads)
        target = base + len(ids)
        taken = serving_samples(shards, batches, lambda applied, n: applied >= target)
        out += [s for applied, s in taken if base < applied < target]
        if len(out) >= samples:
            break
    return np.array(out), rounds


def workload(sync_rows: int) -> dict:
    """IDs and gradients: 4 round-trip batches of BATCH, ``sync_rows`` IDs to sync, serving
    lookups of SERVING_BATCH among those, gradients [sync_rows, DIM] (the first BATCH for round trips)."""
    rng = np.random.default_rng(42)
    ids = np.unique(rng.integers(1, 2**63, sync_rows + 5 * BATCH, dtype=np.uint64))
    rng.shuffle(ids)
    sync_ids = ids[4 * BATCH:4 * BATCH + sync_rows]
    grads = (rng.standard_normal((sync_rows, DIM)) * 0.01).astype(np.float32)
    return {"batches": [ids[i * BATCH:(i + 1) * BATCH] for i in range(4)], "sync_ids": sync_ids, "grads": grads,
            "lookups": [rng.choice(sync_ids, SERVING_BATCH, replace=False) for _ in range(64)]}


def over_the_wire(shards: Shards, w: dict, samples: int, n_rounds: int) -> dict:
    """Every wire measurement, in order: round trips, sync rounds, idle and busy serving."""
    train, grads, ids = shards.train, w["grads"][:BATCH], w["sync_ids"]
    rt = latencies(lambda b: (train.pull("emb", b, insert=True), train.push("emb", b, grads)), w["batches"], samples)
    shipped_during_rt = shards.sync("training")["rows_shipped"]
    for start in range(0, len(ids), BATCH):
        train.pull("emb", ids[start:start + BATCH], insert=True)
    rounds = [sync_round(shards, ids, w["grads"], shards.cfg.paramserver.sync_interval_s) for _ in range(n_rounds)]
    shards.caught_up()
    idle = np.array([s for _, s in serving_samples(shards, w["lookups"], lambda a, n: n >= samples)])
    busy, busy_rounds = during_sync(shards, ids, w["grads"], w["lookups"], samples)
    return {"rt": rt, "rounds": rounds, "idle": idle, "busy": busy, "busy_rounds": busy_rounds,
            "shipped_during_rt": shipped_during_rt}


def figures(wire: dict, local_rt: np.ndarray, local_rate: float, rows: int) -> list[Figure]:
    """The table: each wire figure with its in-process (or idle) baseline."""
    local, rounds = ("in-process lookup+apply", "in-process export+import"), wire["rounds"]
    best = max(r["rows_per_s"] for r in rounds), max(r["push_done_rows_per_s"] for r in rounds)
    return [
        *(Figure(f"pull+push {BATCH}x{DIM} p{q}, 1 shard, loopback", ms(wire["rt"], q), "ms", ms(local_rt, q),
                 local[0], higher_is_better=False) for q in (50, 99)),
        Figure(f"sync {rows // 1000}K rows: tick -> applied (best)", best[0] / 1e3, "K rows/s", local_rate / 1e3,
               local[1]),
        Figure(f"sync {rows // 1000}K rows: last push -> applied", best[1] / 1e3, "K rows/s", local_rate / 1e3,
               local[1]),
        *(Figure(f"serving pull {SERVING_BATCH} p{q} during sync", ms(wire["busy"], q), "ms", ms(wire["idle"], q),
                 "idle", higher_is_better=False) for q in (50, 99)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300, help="latency samples per percentile (>= 200)")
    parser.add_argument("--sync-rows", type=int, default=100_000)
    parser.add_argument("--sync-rounds", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "FLYWHEEL_CONFIG": "config/bench.yaml", "FLYWHEEL__PARAMSERVER__SHARDS": "1",
           "FLYWHEEL__PARAMSERVER__TABLES": TABLES}
    cfg, w = load_config(environ=env), workload(args.sync_rows)
    local = build_tables(cfg, "training")["emb"]
    local_rt = latencies(lambda b: (local.lookup(b, insert=True), local.apply_gradients(b, w["grads"][:BATCH])),
                         w["batches"], args.samples)
    local_rate = local_sync_rate(cfg, w["sync_ids"], w["grads"])
    del local
    with broker_topic(cfg) as topic:
        shards = Shards({**env, "FLYWHEEL__PARAMSERVER__DELTAS_TOPIC": topic})
        try:
            wire = over_the_wire(shards, w, args.samples, args.sync_rounds)
        finally:
            shards.stop()
    path = report("paramserver", figures(wire, local_rt, local_rate, args.sync_rows), notes={
        "samples": {"round_trip": len(wire["rt"]), "idle": len(wire["idle"]), "during_sync": len(wire["busy"]),
                    "during_sync_rounds": wire["busy_rounds"]},
        "sync_rounds": wire["rounds"], "rows_shipped_during_round_trips": wire["shipped_during_rt"],
        "in_process_sync_rows_per_s": local_rate, "sync_interval_s": cfg.paramserver.sync_interval_s,
        "targets": {"round_trip_p50_ms": 5, "serving_p99_during_sync_over_idle": 2}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
