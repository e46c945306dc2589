"""Joiner benchmark: sustained events/s through the Flink joiner, join latency of positives,
state per pending key; baseline: the PyFlink passthrough job (Kafka -> Python -> Kafka, one
json parse per record) on the same cluster in the same run, i.e. PyFlink's per-record floor.

Runs on the bench stack (config/bench.yaml: Kafka, HDFS, Flink on 2xxxx ports), started here
if it is not running and stopped again at the end. Each job reads fresh topics.

- Throughput: ``--features`` served items and ``--actions`` clicks on half of them, all
  produced before the job starts, so the job drains a backlog; events/s is the slope of the
  sources' ``numRecordsOut`` (Flink REST metrics, refreshed every 2 s).
- Latency: then, ``--pairs`` paced feature+click pairs; latency = when the positive is read
  (read_committed) minus when its click was produced (wall clock, same machine).
- State: the job's last completed checkpoint's full state size over the keys in state.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("FLYWHEEL_CONFIG", "config/bench.yaml")

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402

from bench.report import Figure, report  # noqa: E402
from flywheel import flinkjobs  # noqa: E402
from flywheel.config import REPO_ROOT, load_config  # noqa: E402
from flywheel.secrets import flink_auth, kafka_args  # noqa: E402
from flywheel.stack import control  # noqa: E402
from flywheel.stack.supervisor import Supervisor  # noqa: E402
from streaming.schemas import Action, Features, encode, key_of  # noqa: E402

PARTITIONS = 2


def topics(cfg, *names: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    made = {n: f"bench-{n}-{tag}" for n in names}
    admin = KafkaAdminClient(**kafka_args(cfg))
    admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in made.values()])
    admin.close()
    return made


def served(request_id: str, user: int, item: int, at: int) -> Features:
    return Features(request_id=request_id, user_id=user, item_id=item, event_time=at, position=item % 20,
                    model_version="bench", sparse={"user": [user], "item": [item], "genre": [item % 19, 100 + item % 7]},
                    dense={"age": 0.3, "ctr_7d": 0.05})


def click(request_id: str, user: int, item: int, at: int) -> Action:
    return Action(request_id=request_id, user_id=user, item_id=item, event_time=at, action="click", watch_time_ms=900)


def backlog(cfg, t: dict, n_features: int, n_actions: int) -> int:
    """Produce the throughput workload; returns events produced."""
    producer = KafkaProducer(**kafka_args(cfg), linger_ms=20, batch_size=256 * 1024)
    now = int(time.time() * 1000)
    every = max(1, n_features // max(1, n_actions))
    for i in range(n_features):
        f = served(f"b{i}", i % 5000, i, now + i)
        producer.send(t["features"], key=key_of(f), value=encode(f))
        if i % every == 0 and i // every < n_actions:
            a = click(f"b{i}", i % 5000, i, now + i + 1000)
            producer.send(t["actions"], key=key_of(a), value=encode(a))
    producer.flush()
    producer.close()
    return n_features + min(n_actions, (n_features + every - 1) // every)


def source_records(cfg, job: str) -> float:
    return sum(v for k, v in flinkjobs.metrics(cfg, job, ".numRecordsOut").items() if k.startswith("Source__"))


def drain_rate(cfg, job: str, total: int, timeout_s: float = 900) -> float:
    """Events/s while the job's sources work through ``total`` backlogged records."""
    samples, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        n = source_records(cfg, job)
        if not samples or n != samples[-1][1]:
            samples.append((time.monotonic(), n))
        if n >= total:
            break
        time.sleep(0.5)
    moving = [(t, n) for t, n in samples if n > 0]
    if len(moving) < 2 or moving[-1][1] < total:
        raise RuntimeError(f"the job read {samples[-1][1] if samples else 0:.0f}/{total} records in {timeout_s:.0f}s")
    (t0, n0), (t1, n1) = moving[0], moving[-1]
    return (n1 - n0) / (t1 - t0)


def latencies(cfg, t: dict, pairs: int, rate: float) -> np.ndarray:
    """Seconds from producing a click to reading its positive (read_committed)."""
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    consumer = KafkaConsumer(t["examples"], **kafka_args(cfg), auto_offset_reset="latest",
                             isolation_level="read_committed")
    consumer.poll(timeout_ms=2000)  # join the partitions before anything is produced
    done = threading.Event()

    def read():
        while not done.is_set():
            for batch in consumer.poll(timeout_ms=200).values():
                for m in batch:
                    rid = json.loads(m.value)["request_id"]
                    if rid in sent and rid not in got:
                        got[rid] = time.monotonic()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    producer = KafkaProducer(**kafka_args(cfg), linger_ms=0)
    now = int(time.time() * 1000)
    for i in range(pairs):
        rid, user = f"lat{i}-{uuid.uuid4().hex[:4]}", 7000 + i
        f, a = served(rid, user, 900_000 + i, now + i * 10), click(rid, user, 900_000 + i, now + i * 10 + 5)
        producer.send(t["features"], key=key_of(f), value=encode(f))
        producer.send(t["actions"], key=key_of(a), value=encode(a)).get(timeout=10)
        sent[rid] = time.monotonic()
        time.sleep(1 / rate)
    deadline = time.monotonic() + 120
    while len(got) < pairs and time.monotonic() < deadline:
        time.sleep(0.2)
    done.set()
    reader.join()
    consumer.close()
    producer.close()
    if len(got) < pairs:
        raise RuntimeError(f"only {len(got)}/{pairs} positives came out within 120 s")
    return np.array([got[r] - sent[r] for r in sent])


def state_bytes(cfg, job: str, after: float, timeout_s: float = 180) -> float:
    """Full state size of the first checkpoint completed after ``after`` (epoch s)."""
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        latest = (requests.get(f"{cfg.flink_url}/jobs/{job}/checkpoints", auth=flink_auth(cfg), timeout=5).json().get("latest") or {})
        done = latest.get("completed") or {}
        if done and done.get("latest_ack_timestamp", 0) / 1000 > after:
            return float(done["state_size"])
        time.sleep(1)
    raise RuntimeError(f"no checkpoint completed within {timeout_s:.0f}s")


def joiner_run(cfg, delivery: str, args) -> dict:
    t = topics(cfg, "features", "actions", "examples", "dead")
    total = backlog(cfg, t, args.features, args.actions)
    argv = [*flinkjobs.kafka_argv(cfg), "--features-topic", t["features"], "--actions-topic", t["actions"],
            "--examples-topic", t["examples"], "--dead-letter-topic", t["dead"], "--delivery", delivery,
            "--group", f"bench-{uuid.uuid4().hex[:6]}"]
    job = flinkjobs.submit(cfg, REPO_ROOT / "streaming/jobs/joiner.py", argv)
    try:
        flinkjobs.wait(cfg, job, until={"RUNNING"}, timeout_s=120)
        rate = drain_rate(cfg, job, total)
        drained = time.time()
        lat = latencies(cfg, t, args.pairs, args.pair_rate)
        state = state_bytes(cfg, job, drained)
    finally:
        flinkjobs.cancel(cfg, job)
    return {"events": total, "rate": rate, "latency": lat, "state_bytes": state,
            "keys": args.features + args.pairs}


def passthrough_rate(cfg, n: int) -> float:
    t = topics(cfg, "in", "out")
    producer = KafkaProducer(**kafka_args(cfg), linger_ms=20, batch_size=256 * 1024)
    now = int(time.time() * 1000)
    for i in range(n):
        f = served(f"p{i}", i % 5000, i, now + i)
        producer.send(t["in"], key=key_of(f), value=encode(f))
    producer.flush()
    producer.close()
    argv = [*flinkjobs.kafka_argv(cfg), "--source", t["in"], "--sink", t["out"],
            "--start-offsets", json.dumps({str(p): 0 for p in range(PARTITIONS)}), "--group", f"bench-{t['in']}",
            "--unbounded"]
    job = flinkjobs.submit(cfg, REPO_ROOT / "streaming/jobs/passthrough.py", argv)
    try:
        flinkjobs.wait(cfg, job, until={"RUNNING"}, timeout_s=120)
        return drain_rate(cfg, job, n)
    finally:
        if flinkjobs.state(cfg, job) not in flinkjobs.TERMINAL:
            flinkjobs.cancel(cfg, job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=100_000)
    parser.add_argument("--actions", type=int, default=50_000)
    parser.add_argument("--pairs", type=int, default=300, help="paced feature+click pairs for latency")
    parser.add_argument("--pair-rate", type=float, default=50, help="pairs per second")
    args = parser.parse_args()
    cfg = load_config()
    running = Supervisor(cfg).info().get("flink", {}).get("statename") == "RUNNING"
    control.up(cfg, only=["kafka", "flink"], echo=lambda msg: print(msg, flush=True))
    try:
        base = passthrough_rate(cfg, args.features + args.actions)
        fast = joiner_run(cfg, "at-least-once", args)
        safe = joiner_run(cfg, "exactly-once", args)
    finally:
        if not running:
            control.down(cfg)

    def pct(lat, q):
        return float(np.percentile(lat, q) * 1000)

    per_million = fast["state_bytes"] / fast["keys"] * 1e6 / 2**20
    figures = [
        Figure("joiner events/s (at-least-once)", fast["rate"], "events/s", base, "passthrough events/s"),
        Figure("joiner events/s (exactly-once)", safe["rate"], "events/s", base, "passthrough events/s"),
        Figure("positive latency p50 (at-least-once)", pct(fast["latency"], 50), "ms", higher_is_better=False),
        Figure("positive latency p99 (at-least-once)", pct(fast["latency"], 99), "ms", higher_is_better=False),
        Figure("positive latency p50 (exactly-once)", pct(safe["latency"], 50), "ms",
               pct(fast["latency"], 50), "at-least-once p50", higher_is_better=False),
        Figure("positive latency p99 (exactly-once)", pct(safe["latency"], 99), "ms",
               pct(fast["latency"], 99), "at-least-once p99", higher_is_better=False),
        Figure("state per million keys (RocksDB ckpt)", per_million, "MiB", higher_is_better=False),
    ]
    path = report("joiner", figures, notes={
        "events_per_run": fast["events"], "latency_pairs": args.pairs, "pair_rate_per_s": args.pair_rate,
        "checkpoint_interval_s": cfg.flink.checkpoint_interval_s, "parallelism": cfg.flink.parallelism,
        "keys_in_state": fast["keys"], "state_bytes": fast["state_bytes"],
        "targets": {"events_per_s": 20_000, "positive_latency_p99_ms": 2000}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
