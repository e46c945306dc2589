"""The online trainer's loop: consume training examples from Kafka, turn each batch into sparse
gradients, push them to the training PS; snapshot with the offsets covered; recover.

Exactly-once with respect to the parameter servers: the state of the training PS is always
"snapshot S + the examples after S's offsets, applied in order". The offsets live in the
snapshot manifests, not in consumer-group commits. When a push fails for good (a PS shard
died) or the trainer (re)starts, the trainer rolls every shard back to the newest complete
snapshot and replays the examples topic from that snapshot's offsets: nothing acknowledged
is lost, nothing is applied twice.

Handover from batch: when a published batch model's snapshot (``mark_published``) is newer
than the trainer's own, a (re)start or recovery continues from it instead and replays the
examples from where the batch data ended (Kafka timestamps), then snapshots with offsets.

``step`` is the model part (see models/): examples -> {table: (ids, grads)}; here it may be
any deterministic function of the batch and of rows it pulls from the PS.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import numpy as np
import pyarrow.flight as flight
from kafka import KafkaConsumer, TopicPartition

from flywheel.config import FlywheelConfig
from flywheel.secrets import kafka_args
from paramserver.client import PSClient
from paramserver.ledger import batch_key
from paramserver.snapshots import snapshot_all

log = logging.getLogger(__name__)
Step = Callable[[list[dict], PSClient], dict[str, tuple[np.ndarray, np.ndarray]]]


class PoisonBatch(ValueError):
    """A batch whose gradients are not finite: the PS would refuse it, and a replay would too."""


class OnlineTrainer:
    """Single-process trainer over every partition of the examples topic."""

    def __init__(self, cfg: FlywheelConfig, step: Step, topic: str = "examples", batch_size: int = 256,
                 snapshot_every: int = 10_000, recover_timeout_s: float = 120,
                 on_rollback: Callable[[], None] | None = None):
        self.cfg, self.step, self.topic, self.batch_size = cfg, step, topic, batch_size
        self.on_rollback = on_rollback  # the step's own state to reset when the PS rolls back
        self.snapshot_every, self.recover_timeout_s = snapshot_every, recover_timeout_s
        self.ps = PSClient.from_config(cfg, role="training")
        # read_committed: the joiner writes examples in Kafka transactions; aborted ones must
        # not be trained on
        # offsets are also committed to ``online.group`` after each acknowledged push, for lag
        # monitoring (stream_health, the Kafka tools); recovery reads them from snapshots only
        self.consumer = KafkaConsumer(**kafka_args(cfg, "trainer"), enable_auto_commit=False,
                                      isolation_level="read_committed", group_id=cfg.online.group)
        parts = self.consumer.partitions_for_topic(topic)
        if not parts:
            raise RuntimeError(f"examples topic {topic!r} does not exist, or the trainer's Kafka login may not read it: "
                               "'make up' creates the configured topics and their grants (kafka.acls)")
        self.partitions = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(self.partitions)
        self.covered: dict[str, int] = {}  # partition -> end of the last pushed batch (ledger)
        self.applied = 0           # examples applied since the last rollback point
        self.since_snapshot = 0
        self.recoveries = 0
        self.bad_examples = 0
        self.poison_batches = 0    # batches skipped for NaN/Inf gradients

    # -- offsets and snapshots --------------------------------------------------------------
    def position(self) -> dict[str, int]:
        return {str(tp.partition): self.consumer.position(tp) for tp in self.partitions}

    def seek(self, offsets: dict[str, int]) -> None:
        for tp in self.partitions:
            offset = offsets.get(str(tp.partition))
            if offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
        self.covered = self.position()  # the next pushed batch's ledger ranges start here

    def batch_key(self) -> str:
        """The name of the pushes of the batch just polled: the offsets from the end of the last
        pushed batch to the position now, per partition (paramserver/ledger.py)."""
        now = self.position()
        return batch_key(self.topic, {int(p): (self.covered.get(p, now[p]), now[p]) for p in now})

    def snapshot(self) -> dict:
        """Snapshot every shard with the offsets of the next examples to consume."""
        manifest = snapshot_all(self.cfg, examples_offsets={self.topic: self.position()})
        self.since_snapshot = 0
        log.info("snapshot %s at %s", manifest["snapshot_id"], self.position())
        return manifest

    def rollback(self) -> None:
        """Put every shard back on the newest complete snapshot; replay from its offsets."""
        deadline = time.monotonic() + self.recover_timeout_s
        while True:
            try:
                stats = self.ps.stats()
                break
            except flight.FlightError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"training PS not back after {self.recover_timeout_s:.0f}s: {exc}") from exc
                time.sleep(0.5)
        from flywheel.hdfs import webhdfs
        from paramserver.snapshots import latest_published, latest_with_offsets

        fs, root = webhdfs(self.cfg), self.cfg.paramserver.snapshot_dir
        # only a snapshot that records this topic's offsets can be replayed from (one taken by
        # the hourly DAG or the CLI without offsets would replay the topic from the start)...
        snapshot_id = latest_with_offsets(fs, root, self.topic) or "none"
        # ...or a newer one a published batch model handed over: replay from where its data ended
        published = latest_published(fs, root)
        handover = published is not None and (
            snapshot_id == "none" or published["published"] > self._taken(fs, root, snapshot_id))
        if handover:
            snapshot_id = published["snapshot_id"]
        body = json.dumps({"snapshot_id": snapshot_id}).encode()
        manifests = [json.loads(self.ps.call_action(s, "restore", body, timeout_s=1800)) for s in range(len(stats))]
        if handover:
            offsets = self.offsets_at(published["data_end_ms"])
        else:
            offsets = manifests[0].get("examples_offsets", {}).get(self.topic, {}) if manifests[0] else {}
        self.seek(offsets)
        if self.on_rollback is not None:
            self.on_rollback()
        self.ps.forget_incarnations()  # the restored shards are the ones to follow now
        self.recoveries += 1
        log.warning("rolled back to %ssnapshot %s; replaying %s from %s", "the published " if handover else "",
                    snapshot_id, self.topic, offsets or "the start")
        if handover:  # from now on a rollback returns here (with offsets), not to an older own snapshot
            self.snapshot()

    @staticmethod
    def _taken(fs, root: str, snapshot_id: str) -> float:
        """When a snapshot was taken (its latest shard's ``created``), seconds since the epoch."""
        from paramserver.snapshots import COMPLETE

        manifest = json.loads(fs.cat_file(f"{root}/{snapshot_id}/{COMPLETE}"))
        return max(shard["created"] for shard in manifest["shards"])

    def offsets_at(self, time_ms: int) -> dict[str, int]:
        """Per partition, the first offset at or after ``time_ms`` (Kafka timestamps), or the end."""
        found = self.consumer.offsets_for_times({tp: time_ms for tp in self.partitions})
        ends = self.consumer.end_offsets(self.partitions)
        return {str(tp.partition): (found[tp].offset if found.get(tp) else ends[tp]) for tp in self.partitions}

    # -- the loop ---------------------------------------------------------------------------
    def _batch(self, timeout_ms: int = 500) -> list[dict]:
        out: list[dict] = []
        for records in self.consumer.poll(timeout_ms=timeout_ms, max_records=self.batch_size).values():
            for record in records:
                try:
                    out.append(json.loads(record.value))
                except ValueError:
                    self.bad_examples += 1  # counted; the joiner's dead-letter topic keeps the original
        return out

    def train_batch(self, examples: list[dict], key: str | None = None) -> None:
        """Push the batch's gradients; ``key`` names the pushes (``<key>#<table>``, so the
        training PS's ledger can tell which examples were applied)."""
        grads = self.step(examples, self.ps)
        bad = sorted(t for t, (ids, g) in grads.items() if len(ids) and not np.isfinite(g).all())
        if bad:
            raise PoisonBatch(f"batch {key or '?'} gives NaN or infinite gradients for tables {bad}; "
                              "nothing of it was pushed")
        for table, (ids, g) in grads.items():
            if len(ids):
                self.ps.push(table, ids, g, request_id=f"{key}#{table}" if key else None)

    def lag(self) -> int:
        """Examples on the topic not yet consumed (end offsets minus positions, all partitions)."""
        ends = self.consumer.end_offsets(self.partitions)
        return sum(max(0, ends[tp] - self.consumer.position(tp)) for tp in self.partitions)

    def run(self, stop: Callable[[], bool] = lambda: False, idle_exit_s: float | None = None,
            on_tick: Callable[[OnlineTrainer], None] | None = None, tick_s: float = 30.0,
            on_batch: Callable[[list[dict]], None] | None = None) -> None:
        """Train until ``stop()`` or, with ``idle_exit_s``, until no example came for that long;
        ``on_tick(self)`` runs in this loop at most every ``tick_s`` (metrics, logging);
        ``on_batch(examples)`` after each batch the training PS acknowledged."""
        self.rollback()  # a (re)started trainer continues from the newest snapshot
        idle_since = last_tick = time.monotonic()
        while not stop():
            if on_tick is not None and time.monotonic() - last_tick >= tick_s:
                last_tick = time.monotonic()
                on_tick(self)
            examples = self._batch()
            if not examples:
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    return
                continue
            idle_since = time.monotonic()
            try:
                self.train_batch(examples, self.batch_key())
                self.covered = self.position()
                self.consumer.commit_async()  # the PS acknowledged: the group may move past them
                if on_batch is not None:
                    on_batch(examples)
                self.applied += len(examples)
                self.since_snapshot += len(examples)
                if self.since_snapshot >= self.snapshot_every:
                    self.snapshot()
            except PoisonBatch as exc:  # replaying it would fail again: skip it, say so, count it
                self.poison_batches += 1
                self.covered = self.position()  # its offsets stay a gap in the PS ledger: not applied
                self.consumer.commit_async()
                log.error("%s; skipped (%d poison batches so far)", exc, self.poison_batches)
            except flight.FlightError as exc:
                log.warning("training PS call failed (%s): recovering", exc)
                self.rollback()
