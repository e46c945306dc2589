"""After a chaos run: what the topics and the parameter servers say happened to the traffic.

- :func:`read_topic`: every committed record of a topic from given offsets to its end
  (``read_committed``: what the joiner and the trainer read).
- :func:`actions_reconciled`: each action the event collector acknowledged is on ``actions``
  exactly once (lost: acknowledged, never written; doubled: written more often than once
  plus once per post of it that got no answer); :func:`rewritten_by_retries`: the ones a
  client's retry after an unanswered post wrote again.
- :func:`examples_reconciled`: each acknowledged click was joined into an example labelled
  click=1 for its impression (request_id, item_id), and no emission is there twice.
- :func:`converged`: the serving PS holds what the training PS holds for the given IDs.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from kafka import KafkaConsumer, TopicPartition

from flywheel.config import FlywheelConfig
from flywheel.secrets import kafka_args


def end_offsets(cfg: FlywheelConfig, topic: str) -> dict[int, int]:
    """Partition -> the offset the next record will take (where a run starts reading)."""
    consumer = KafkaConsumer(**kafka_args(cfg), isolation_level="read_committed")
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def read_topic(cfg: FlywheelConfig, topic: str, start: dict[int, int], timeout_s: float = 120) -> list[dict]:
    """The JSON values of ``topic``'s committed records from ``start`` (partition -> offset) to
    the end offsets seen now; records that are not JSON objects are skipped (the dead-letter
    route handles those)."""
    consumer = KafkaConsumer(**kafka_args(cfg), isolation_level="read_committed",
                             enable_auto_commit=False)
    out: list[dict] = []
    try:
        parts = [TopicPartition(topic, p) for p in sorted(start)]
        consumer.assign(parts)
        ends = consumer.end_offsets(parts)
        for tp in parts:
            consumer.seek(tp, start[tp.partition])
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: not at its end offsets {ends} within {timeout_s:.0f}s")
            for records in consumer.poll(timeout_ms=1000).values():
                for r in records:
                    try:
                        value = json.loads(r.value)
                    except ValueError:
                        continue
                    if isinstance(value, dict):
                        out.append(value)
    finally:
        consumer.close()
    return out


@dataclass
class Tally:
    """One invariant's count: ``expected`` keys, and the ones ``lost`` or ``doubled``."""

    name: str
    expected: int = 0
    lost: list = field(default_factory=list)
    doubled: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.doubled

    def line(self) -> str:
        state = "ok" if self.ok else "FAILED"
        text = f"{self.name:<44}{self.expected:>8}{len(self.lost):>8}{len(self.doubled):>9}  {state}"
        if self.lost:
            text += f"\n    lost: {self.lost[:20]}{' ...' if len(self.lost) > 20 else ''}"
        if self.doubled:
            text += f"\n    doubled: {self.doubled[:20]}{' ...' if len(self.doubled) > 20 else ''}"
        return text


def action_key(a: dict) -> tuple:
    return a["request_id"], a["item_id"], a["action"], a["event_time"]


def actions_reconciled(acked: list[dict], written: list[dict], unanswered: Counter | None = None) -> Tally:
    """Each acknowledged action on the topic exactly once (matched on request id, item, action
    and event time). ``unanswered``: per action, the client's posts of it that got no HTTP
    answer (the server crashed or hung after Kafka may have taken them) before the post that
    was acknowledged; each may add one write (:func:`rewritten_by_retries`). Any other extra
    write is doubled: the server's or Kafka's fault (a 503 promises "not written")."""
    wanted, counts = _writes(acked, written)
    allowed = unanswered or Counter()
    return Tally("actions acknowledged -> on `actions` once", len(wanted),
                 lost=sorted(k for k in wanted if counts[k] == 0),
                 doubled=sorted(k for k, n in counts.items() if n > 1 + allowed[k]))


def rewritten_by_retries(acked: list[dict], written: list[dict], unanswered: Counter) -> list[tuple]:
    """Acknowledged actions written more than once, but no more often than one write per post
    of them that got no answer, plus the acknowledged one: the server crashed after Kafka took
    a post, and the client retried. HTTP without idempotency keys is at least once here; the
    joiner merges an impression's repeated labels (streaming/jobs/joiner.py), so no example is
    doubled."""
    _, counts = _writes(acked, written)
    return sorted(k for k, n in counts.items() if 1 < n <= 1 + unanswered[k])


def _writes(acked: list[dict], written: list[dict]) -> tuple[set, Counter]:
    """(the acknowledged actions' keys, how often each of them was written)."""
    wanted = {action_key(a) for a in acked}
    return wanted, Counter(k for k in map(action_key, written) if k in wanted)


def unlogged_clicks(acked: list[dict], features: list[dict]) -> list[tuple]:
    """Acknowledged clicks on impressions whose served features never reached ``features``:
    the model server logs features asynchronously (``serving.features_linger_ms``), so a crash
    loses the last ones served; such a click can never join (README, Guarantees)."""
    logged = {(f.get("request_id"), f.get("item_id")) for f in features}
    return sorted({(a["request_id"], a["item_id"]) for a in acked if a["action"] == "click"} - logged)


def examples_reconciled(acked: list[dict], examples: list[dict], unlogged: list[tuple] = ()) -> Tally:
    """Each acknowledged click's impression joined into an example with click=1 (but for the
    ``unlogged`` ones, which cannot join); no emission (impression, labels, correction and
    provisional flags) written twice."""
    clicked = {(a["request_id"], a["item_id"]) for a in acked if a["action"] == "click"} - set(unlogged)
    emissions = Counter((e.get("request_id"), e.get("item_id"), tuple(sorted((e.get("labels") or {}).items())),
                         bool(e.get("is_correction")), bool(e.get("provisional"))) for e in examples)
    joined = {(rid, item) for (rid, item, labels, *_) in emissions if dict(labels).get("click") == 1}
    return Tally("acknowledged clicks -> joined into `examples`", len(clicked),
                 lost=sorted(clicked - joined),
                 doubled=sorted(k[:2] for k, n in emissions.items() if n > 1 and k[:2] in clicked))


def converged(training, serving, ids: dict[str, np.ndarray], atol: float = 1e-6) -> tuple[bool, float, int]:
    """(the serving rows equal the training rows, the largest difference, rows compared) for
    ``ids`` (table -> IDs), read through two PS clients."""
    worst, rows = 0.0, 0
    for table, wanted in ids.items():
        if not len(wanted):
            continue
        a, b = training.pull(table, wanted), serving.pull(table, wanted)
        worst = max(worst, float(np.max(np.abs(a - b))))
        rows += len(wanted)
    return worst <= atol, worst, rows
