"""Training -> serving sync of sparse parameters through a Kafka topic of Arrow deltas.

Every ``sync_interval_s`` the training PS shard exports each table's delta (rows touched since
the last export, and tombstones) and produces it to the deltas topic, in messages of at most
~900 KB (Kafka's default limit is 1 MB), keyed ``<table>/<shard>``, to partition
``shard % partitions`` so a shard's messages stay ordered. Tombstones go before upserts.

Any number of serving replicas consume the topic and apply the messages of their shard; a new
replica reads it from the beginning (or from a snapshot's offset) to catch up. A delta that
cannot be produced stays queued and is sent first at the next interval.

When a training shard restores (at start, or when the trainer rolls back) it first ships a
*reset* message (key ``*/<shard>``) naming the snapshot it now holds (or ``none``): a serving
replica reloads that snapshot for the shard (or empties it) before applying what follows, so
rows created after the snapshot do not outlive the rollback on serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from paramserver.table import EmbeddingTable
from paramserver.wire import decode, encode

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 900_000
RESET_ATTEMPTS = 5  # a reset whose snapshot fails to load this often falls back to the newest one


def delta_messages(table: str, shard: int, ids: np.ndarray, rows: np.ndarray, tombstones: np.ndarray) -> list[bytes]:
    """Encode one table's delta as Kafka message values: deletes first, then upserts."""
    out: list[bytes] = []
    dim = rows.shape[1] if rows.ndim == 2 else 1
    per_message = max(1, MAX_MESSAGE_BYTES // (dim * 4 + 16))
    for start in range(0, len(tombstones), MAX_MESSAGE_BYTES // 8):
        chunk = tombstones[start:start + MAX_MESSAGE_BYTES // 8]
        out.append(encode({"table": table, "shard": shard, "kind": "delete"}, id=chunk).to_pybytes())
    for start in range(0, len(ids), per_message):
        out.append(encode({"table": table, "shard": shard, "kind": "upsert"},
                          id=ids[start:start + per_message], row=rows[start:start + per_message]).to_pybytes())
    return out


def reset_message(shard: int, snapshot_id: str | None, root: str) -> tuple[bytes, bytes]:
    """(key, value) of the message telling serving replicas that ``shard`` now holds exactly
    ``snapshot_id`` under ``root`` (``None``: nothing)."""
    meta = {"kind": "reset", "shard": shard, "snapshot_id": snapshot_id or "none", "root": root}
    return f"*/{shard}".encode(), encode(meta, id=np.zeros(0, np.uint64)).to_pybytes()


class DeltaPublisher:
    """Ships one training shard's deltas to Kafka every ``interval_s`` (a daemon thread)."""

    def __init__(self, tables: dict[str, EmbeddingTable], shard: int, kafka: dict, topic: str,
                 interval_s: float, status: dict):
        """``kafka``: the client arguments (bootstrap address and login, flywheel.secrets.kafka_args)."""
        self.tables, self.shard, self.topic, self.interval_s = tables, shard, topic, interval_s
        self.status = status
        self._producer = KafkaProducer(**kafka, acks="all", linger_ms=5,
                                       max_request_size=1_048_576, retries=5)
        partitions = self._producer.partitions_for(topic)
        if not partitions:
            raise RuntimeError(f"deltas topic {topic!r} does not exist: run 'make up' (it creates configured topics)")
        self.partition = shard % len(partitions)
        self._queued: deque[tuple[bytes, bytes]] = deque()
        self._lock = threading.Lock()  # one sync at a time (timer thread or a snapshot)
        self._kafka = kafka
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"delta-publisher-{shard}", daemon=True)
        status.update({"role": "publisher", "topic": topic, "partition": self.partition, "rows_shipped": 0,
                       "tombstones_shipped": 0, "last_sync": None, "last_error": None})

    def start(self) -> DeltaPublisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sync_once()

    def sync_once(self) -> int:
        """Evict expired rows, then export and ship every table's delta; returns rows shipped."""
        with self._lock:
            return self._sync_locked()

    def flush_and_offset(self) -> int:
        """Ship everything pending, then return the end offset of this shard's partition:
        every delta of this shard so far lies before it. Raises if Kafka is unreachable."""
        with self._lock:
            self._sync_locked()
            if not self._queued:
                self._sync_locked()  # the first call may only have drained older messages
            if self._queued:
                raise RuntimeError(f"deltas could not be shipped: {self.status['last_error']}")
            consumer = KafkaConsumer(**self._kafka)
            try:
                tp = TopicPartition(self.topic, self.partition)
                return consumer.end_offsets([tp])[tp]
            finally:
                consumer.close()

    def restore_and_reset(self, restore: Callable[[], dict | None], root: str) -> dict | None:
        """Run ``restore`` (loads the shard; returns the snapshot's manifest, or None when the
        shard is now empty), then tell serving replicas (see the module docstring), all under
        the sync lock: no delta of the restored tables (an eviction, say) can go out before
        the reset. Deltas still queued describe the state before the restore: dropped. If
        Kafka is down the reset stays queued and goes first at the next interval."""
        with self._lock:
            manifest = restore()
            for table in self.tables.values():
                table.export_delta()  # changes made before the restore are superseded by it
            self._queued.clear()
            self._queued.append(reset_message(self.shard, manifest and manifest["snapshot_id"], root))
            self._sync_locked()
            if not self._queued:
                self.status["resets_shipped"] = self.status.get("resets_shipped", 0) + 1
            return manifest

    def _sync_locked(self) -> int:
        shipped = tombs = 0
        # While earlier messages wait (Kafka down), export nothing new: the table's dirty flags
        # keep merging updates, so the queue does not grow with the outage.
        for name, table in (self.tables.items() if not self._queued else ()):
            table.evict()
            delta = table.export_delta()
            key = f"{name}/{self.shard}".encode()
            for value in delta_messages(name, self.shard, delta.ids, delta.rows, delta.tombstones):
                self._queued.append((key, value))
            shipped, tombs = shipped + len(delta.ids), tombs + len(delta.tombstones)
        try:
            while self._queued:
                key, value = self._queued[0]
                self._producer.send(self.topic, key=key, value=value, partition=self.partition).get(timeout=30)
                self._queued.popleft()
            self._producer.flush()
        except Exception as exc:  # noqa: BLE001 - keep the queue, retry next interval, report it
            self.status["last_error"] = f"{type(exc).__name__}: {exc}"
            log.warning("delta sync to %s failed (%s); %d messages stay queued", self.topic, exc, len(self._queued))
            return 0
        self.status.update(rows_shipped=self.status["rows_shipped"] + shipped,
                           tombstones_shipped=self.status["tombstones_shipped"] + tombs,
                           last_sync=time.time(), last_error=None, queued_messages=len(self._queued))
        return shipped

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sync_once()
        self._producer.close()


class DeltaSubscriber:
    """Applies one shard's deltas from Kafka to a serving shard's tables (a daemon thread).
    Lookups keep running while deltas apply (the table's shared lock)."""

    def __init__(self, tables: dict[str, EmbeddingTable], shard: int, kafka: dict, topic: str,
                 status: dict, start_offset: int | None = None,
                 on_reset: Callable[[str, str], object] | None = None):
        """``on_reset(snapshot_id, root)`` reloads the shard from a snapshot (``none``: empty)."""
        self.tables, self.shard, self.status, self.on_reset = tables, shard, status, on_reset
        self._reset_failures: dict[int, int] = {}
        self._consumer = KafkaConsumer(**kafka, enable_auto_commit=False,
                                       fetch_max_bytes=16 * 1_048_576, max_partition_fetch_bytes=4 * 1_048_576)
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions:
            raise RuntimeError(f"deltas topic {topic!r} does not exist: run 'make up' (it creates configured topics)")
        self.tp = TopicPartition(topic, shard % len(partitions))
        self._consumer.assign([self.tp])
        if start_offset is None:
            self._consumer.seek_to_beginning(self.tp)
        else:
            self._consumer.seek(self.tp, start_offset)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"delta-subscriber-{shard}", daemon=True)
        status.update({"role": "subscriber", "topic": topic, "partition": self.tp.partition, "rows_applied": 0,
                       "tombstones_applied": 0, "last_applied": None, "offset": None, "lag": None,
                       "resets_applied": 0, "bad_messages": 0, "last_error": None})

    def start(self) -> DeltaSubscriber:
        self._thread.start()
        return self

    def _run(self) -> None:
        lag_checked = 0.0
        while not self._stop.is_set():
            try:
                for records in self._consumer.poll(timeout_ms=200).values():
                    for record in records:
                        self._apply(record)
                if time.monotonic() - lag_checked > 2:  # a broker round trip: not every poll
                    position = self._consumer.position(self.tp)
                    end = self._consumer.end_offsets([self.tp])[self.tp]
                    self.status.update(offset=position, lag=end - position, last_error=None)
                    lag_checked = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - a broker hiccup must not end syncing
                self.status["last_error"] = f"{type(exc).__name__}: {exc}"
                log.warning("delta subscriber on %s: %s; retrying in 1 s", self.tp, exc)
                self._stop.wait(1)

    def _apply(self, record) -> None:
        key = (record.key or b"").decode(errors="replace")
        table_name, _, shard = key.partition("/")
        if shard != str(self.shard):
            return  # another shard sharing this partition
        try:
            meta, cols = decode(record.value)
        except Exception as exc:  # noqa: BLE001 - count and skip a bad message, never stop syncing
            self.status["bad_messages"] += 1
            log.error("skipping undecodable delta at %s offset %d (key %r): %s", self.tp, record.offset, key, exc)
            return
        if meta.get("kind") == "reset":  # not skipped when it fails: raises, and is retried
            self._reset(meta, record.offset)
            return
        try:
            table = self.tables[table_name]
            if meta.get("kind") == "delete":
                table.remove(cols["id"])
                self.status["tombstones_applied"] += len(cols["id"])
            else:
                table.import_rows(cols["id"], cols["row"])
                self.status["rows_applied"] += len(cols["id"])
            self.status["last_applied"] = time.time()
        except Exception as exc:  # noqa: BLE001 - count and skip a bad message, never stop syncing
            self.status["bad_messages"] += 1
            log.error("skipping bad delta at %s offset %d (key %r): %s", self.tp, record.offset, key, exc)

    def _reset(self, meta: dict, offset: int) -> None:
        """Reload the snapshot a reset names. If that fails (HDFS hiccup) the reset is retried
        from its offset every second; after ``RESET_ATTEMPTS`` failures (the snapshot was
        deleted, say) the shard loads the newest snapshot instead, and skips ahead to its
        deltas-topic offset when that lies beyond the reset."""
        snapshot_id = meta["snapshot_id"]
        if snapshot_id == "none":
            for table in self.tables.values():
                table.clear()
        elif self.on_reset is None:
            raise RuntimeError(f"reset to snapshot {snapshot_id} but this subscriber cannot load snapshots")
        else:
            failures = self._reset_failures.get(offset, 0)
            try:
                manifest = self.on_reset(snapshot_id if failures < RESET_ATTEMPTS else "latest", meta["root"])
            except Exception as exc:
                self._reset_failures[offset] = failures + 1
                self.status["reset_retries"] = self.status.get("reset_retries", 0) + 1
                self._consumer.seek(self.tp, offset)
                raise RuntimeError(f"reset to snapshot {snapshot_id} failed ({failures + 1}x; "
                                   f"after {RESET_ATTEMPTS} the newest snapshot is loaded): {exc}") from exc
            self._reset_failures.pop(offset, None)
            if failures >= RESET_ATTEMPTS:
                snapshot_id = manifest["snapshot_id"] if manifest else "none"
                if manifest and (manifest.get("delta_offset") or 0) > offset + 1:
                    self._consumer.seek(self.tp, manifest["delta_offset"])
        self.status["resets_applied"] += 1
        self.status["reset_to"] = snapshot_id
        log.info("shard %d reset to snapshot %s by the training PS", self.shard, snapshot_id)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()
