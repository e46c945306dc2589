"""Which examples a training shard applied since it was last restored: the evidence for "every
joined example was applied exactly once".

The online trainer names each push after the examples it carries (:func:`batch_key`): the
topic, and per partition the offsets from the end of the previous pushed batch to the
consumer's position after this one, so consecutive batches cover a partition without a gap
(transaction markers and unparseable records included). The shard's :class:`Ledger` keeps, per
table and partition, the union of the applied ranges; a push overlapping what that table
already applied is a double application and is recorded as one (the push itself is applied:
the ledger observes, the trainer's rollback protocol enforces). A restore empties the ledger:
the snapshot's offsets are where coverage starts again.

:func:`gaps_and_doubles` checks the shards' ledgers against the trainer's position: every
offset in [snapshot offset, position) covered (else: lost), none twice (doubled).
"""

from __future__ import annotations

import bisect
import re
import threading

MAX_DOUBLES_KEPT = 1000
KEY = re.compile(r"^(?P<topic>[^@#/]+)@(?P<ranges>\d+:\d+-\d+(?:,\d+:\d+-\d+)*)#(?P<table>[^/]+)(?:/\d+)?$")


def batch_key(topic: str, ranges: dict[int, tuple[int, int]]) -> str:
    """``topic@p:start-end,...`` for a batch covering ``ranges`` (partition -> [start, end))."""
    parts = ",".join(f"{p}:{s}-{e}" for p, (s, e) in sorted(ranges.items()) if e > s)
    return f"{topic}@{parts}"


def parse(request_id: str) -> tuple[str, str, dict[int, tuple[int, int]]] | None:
    """(topic, table, ranges) of a push named by :func:`batch_key` + ``#table`` (+ ``/shard``),
    or None for any other request id."""
    m = KEY.match(request_id)
    if m is None:
        return None
    ranges = {}
    for part in m["ranges"].split(","):
        p, span = part.split(":")
        s, e = span.split("-")
        ranges[int(p)] = (int(s), int(e))
    return m["topic"], m["table"], ranges


class Ledger:
    """Per (table, topic, partition): sorted disjoint [start, end) ranges applied; doubles."""

    def __init__(self):
        self._lock = threading.Lock()
        self.ranges: dict[tuple[str, str, int], list[list[int]]] = {}
        self.doubles: list[dict] = []  # the first MAX_DOUBLES_KEPT
        self.double_count = 0

    def reset(self) -> None:
        with self._lock:
            self.ranges.clear()
            self.doubles.clear()
            self.double_count = 0

    def record(self, request_id: str) -> None:
        """Note an applied push (any request id; only :func:`batch_key` ones are kept)."""
        parsed = parse(request_id)
        if parsed is None:
            return
        topic, table, ranges = parsed
        with self._lock:
            for p, (s, e) in ranges.items():
                if e <= s:
                    continue
                spans = self.ranges.setdefault((table, topic, p), [])
                i = bisect.bisect_left(spans, [s, e])
                for j in (i - 1, i):  # a neighbour that overlaps: this part was applied before
                    if 0 <= j < len(spans) and spans[j][0] < e and s < spans[j][1]:
                        self.double_count += 1
                        if len(self.doubles) < MAX_DOUBLES_KEPT:
                            self.doubles.append({"table": table, "topic": topic, "partition": p,
                                                 "offsets": [max(s, spans[j][0]), min(e, spans[j][1])]})
                spans.insert(i, [s, e])
                merged: list[list[int]] = []
                for span in spans:  # merge touching or overlapping neighbours
                    if merged and span[0] <= merged[-1][1]:
                        merged[-1][1] = max(merged[-1][1], span[1])
                    else:
                        merged.append(list(span))
                spans[:] = merged

    def summary(self) -> dict:
        """JSON-ready: ``ranges`` as ``{table: {"topic@p": [[s, e], ...]}}`` and ``doubles``."""
        with self._lock:
            out: dict[str, dict[str, list]] = {}
            for (table, topic, p), spans in sorted(self.ranges.items()):
                out.setdefault(table, {})[f"{topic}@{p}"] = [list(s) for s in spans]
            return {"ranges": out, "doubles": list(self.doubles), "double_count": self.double_count}


def gaps_and_doubles(shards: list[dict], topic: str, position: dict[int, int]) -> tuple[list, list]:
    """From each training shard's stats (``ledger`` and ``restored_from``) and the trainer's
    ``position`` (partition -> next offset): (offset ranges never applied, ranges applied twice).

    Coverage per partition is the union over shards and tables (a batch need not touch every
    table on every shard, but touches some); it must be exactly [start, position), where start is
    the restored snapshot's offset, or the lowest covered offset when the snapshot has none."""
    doubles = [d for s in shards for d in s.get("ledger", {}).get("doubles", []) if d["topic"] == topic]
    gaps = []
    for p, end in sorted(position.items()):
        spans = sorted(span for s in shards for ranges in s.get("ledger", {}).get("ranges", {}).values()
                       for span in ranges.get(f"{topic}@{p}", []))
        restored = [((s.get("restored_from") or {}).get("examples_offsets") or {}).get(topic, {}) for s in shards]
        starts = [int(r[str(p)]) for r in restored if str(p) in r]
        start = max(starts) if starts else (spans[0][0] if spans else end)
        at = start
        for s, e in spans:
            if s > at:
                gaps.append({"partition": p, "offsets": [at, s]})
            at = max(at, e)
        if at < end:
            gaps.append({"partition": p, "offsets": [at, end]})
    return gaps, doubles
