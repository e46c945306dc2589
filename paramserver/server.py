"""A parameter-server shard over Arrow Flight: holds this shard's rows of every table.

Roles:
  * ``training``: trainers ``pull`` (with ``insert`` for admission) and ``push`` gradients
    (the optimizer runs here); a push carries a request id and is applied at most once, even
    when the client retries after a timeout; an inserting pull carries one too and counts its
    IDs toward admission at most once (a retry only reads).
  * ``serving``: model servers ``pull`` (read only); rows arrive from the deltas topic.

Actions (``FlightClient.do_action``): ``pull``, ``pull_many`` (several tables in one call: the
IDs of all with each one's table index, one result per table), ``push``, ``stats``, ``health``.
Bodies and results are Arrow IPC messages (:mod:`paramserver.wire`), except stats/health (JSON).
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from collections import OrderedDict, deque
from contextlib import contextmanager

import numpy as np
import pyarrow.flight as flight

from paramserver.sharding import shard_of
from paramserver.ledger import Ledger
from paramserver.table import EmbeddingTable
from paramserver.wire import decode, encode

DEDUP_WINDOW = 100_000  # request ids of pushes and inserting pulls remembered (at most once within this many)


class _Applied:
    """One push or inserting pull: done once applied; its retries wait for it and share its
    result (None while not applied, or if it failed)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: dict | None = None


class _Gate:
    """Many mutators (pushes, inserting pulls) or one snapshot at a time; a waiting snapshot
    holds new mutators back so it is not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._snapshot = False

    def enter(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._snapshot)
            self._active += 1

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    @contextmanager
    def exclusive(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._snapshot)
            self._snapshot = True
            self._cond.wait_for(lambda: self._active == 0)
        try:
            yield
        finally:
            with self._cond:
                self._snapshot = False
                self._cond.notify_all()


class _Rate:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 10.0):
        self.window_s, self.times = window_s, deque()
        self._lock = threading.Lock()  # Flight calls run on many threads

    def add(self, n: int = 1) -> None:
        now = time.monotonic()
        with self._lock:
            self.times.append((now, n))
            while self.times and self.times[0][0] < now - self.window_s:
                self.times.popleft()

    def per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            return sum(n for t, n in self.times if t >= now - self.window_s) / self.window_s


class TokenCheck(flight.ServerMiddlewareFactory):
    """Refuses every call whose ``authorization`` header is not ``Bearer <token>``
    (UNAUTHENTICATED, with what to do), counting the refusals."""

    def __init__(self, token: str):
        self.expected = f"Bearer {token}".encode()
        self.refused = 0
        self._lock = threading.Lock()  # start_call runs on gRPC's worker threads

    def start_call(self, info, headers):
        given = (headers.get("authorization") or [""])[0]
        given = given.encode() if isinstance(given, str) else given
        if not hmac.compare_digest(given, self.expected):
            with self._lock:
                self.refused += 1
            raise flight.FlightUnauthenticatedError(
                f"{info.method} refused: no or a wrong bearer token; clients take it from FLYWHEEL_PS_TOKEN or the "
                "stack's secrets/paramserver_token (paramserver.require_token)")
        return None


class ParamServer(flight.FlightServerBase):
    """One shard of the training or serving parameter server.

    Args:
      token: when given, every call must carry it (:class:`TokenCheck`); None: open.
    """

    def __init__(self, location: str, tables: dict[str, EmbeddingTable], role: str, shard: int, shards: int,
                 token: str | None = None):
        self.token_check = TokenCheck(token) if token else None
        super().__init__(location, middleware={"token": self.token_check} if token else None)
        if role not in ("training", "serving"):
            raise ValueError(f"role must be training or serving, got {role!r}")
        self.tables, self.role, self.shard, self.shards = tables, role, shard, shards
        self._applied: OrderedDict[str, _Applied] = OrderedDict()
        self._applied_lock = threading.Lock()
        self.pulls, self.pushes = _Rate(), _Rate()
        self.duplicates = 0
        self.ledger = Ledger()  # which examples' pushes were applied since the last restore
        self.sync_status: dict = {}  # filled by the delta publisher/subscriber
        self.started = time.time()
        self.gate = _Gate()
        self.snapshotter = None  # set by the service: body(dict) -> manifest(dict)
        self.restorer = None  # set by the service: snapshot id or "none" -> manifest or None
        # changes with every start: a client that sees it change knows updates since the last
        # snapshot were lost with the old process (see PSClient.push)
        self.incarnation = uuid.uuid4().hex
        self.restored: dict | None = None  # manifest of the snapshot this shard started from

    # -- actions ----------------------------------------------------------------------------
    def do_action(self, context, action):
        kind = action.type
        if kind == "pull":
            return [flight.Result(self._pull(action.body))]
        if kind == "pull_many":
            return [flight.Result(body) for body in self._pull_many(action.body)]
        if kind == "push":
            return [flight.Result(json.dumps(self._push(action.body)).encode())]
        if kind in ("stats", "health"):
            return [flight.Result(json.dumps(self.stats()).encode())]
        if kind == "snapshot":
            return [flight.Result(json.dumps(self._snapshot(action.body)).encode())]
        if kind == "restore":
            return [flight.Result(json.dumps(self._restore(action.body)).encode())]
        raise flight.FlightServerError(f"unknown action {kind!r}; use pull, pull_many, push, snapshot, stats or health")

    def list_actions(self, context):
        return [("pull", "rows of ids"), ("pull_many", "rows of ids of several tables, one result per table"),
                ("push", "apply gradients (training)"),
                ("snapshot", "write this shard to HDFS (training)"),
                ("restore", "reload this shard from a snapshot (training; trainer recovery)"),
                ("stats", "rows, bytes, rates, sync"), ("health", "same as stats")]

    def _snapshot(self, body) -> dict:
        if self.role != "training":
            raise flight.FlightServerError("snapshots are taken on the training PS")
        if self.snapshotter is None:
            raise flight.FlightUnavailableError("this shard is still starting; retry")
        request = json.loads(body.to_pybytes())
        with self.gate.exclusive():  # no push or inserting pull while the shard is written
            return self.snapshotter(request)

    def _restore(self, body) -> dict:
        if self.role != "training":
            raise flight.FlightServerError("restore is for the training PS (the serving PS follows deltas)")
        if self.restorer is None:
            raise flight.FlightUnavailableError("this shard is still starting; retry")
        request = json.loads(body.to_pybytes())
        with self.gate.exclusive():
            manifest = self.restorer(request.get("snapshot_id", "none"))
            with self._applied_lock:
                self._applied.clear()  # pushes applied after the snapshot are gone with it
            self.ledger.reset()
            self.restored = manifest
        return manifest or {}

    def _table(self, meta: dict) -> EmbeddingTable:
        name = meta.get("table", "")
        if name not in self.tables:
            raise flight.FlightServerError(f"unknown table {name!r} on {self.role} PS shard {self.shard}; "
                                           f"tables: {sorted(self.tables)}")
        return self.tables[name]

    def _check_shard(self, ids: np.ndarray) -> None:
        wrong = int((shard_of(ids, self.shards) != self.shard).sum())
        if wrong:
            raise flight.FlightServerError(
                f"{wrong} of {len(ids)} ids do not belong to shard {self.shard} of {self.shards}: "
                "the client and the parameter servers disagree on paramserver.shards")

    def _pull(self, body) -> bytes:
        meta, cols = decode(body)
        table, ids = self._table(meta), cols["id"]
        self._check_shard(ids)
        insert = self.role == "training" and meta.get("insert") == "1"
        rows = self._lookup_inserting(table, ids, meta.get("request_id", "")) if insert else table.lookup(ids)
        self.pulls.add(len(ids))
        return encode({}, row=rows)

    def _pull_many(self, body) -> list[bytes]:
        """``meta["tables"]`` (comma-separated) and columns ``id`` and ``part`` (each ID's
        table, an index into that list): one ``row`` message per table, in that order. An
        inserting pull counts each table's IDs once per ``request_id`` (as ``pull``)."""
        meta, cols = decode(body)
        names = meta.get("tables", "").split(",") if meta.get("tables") else []
        ids, part = cols["id"], cols["part"]
        self._check_shard(ids)
        insert = self.role == "training" and meta.get("insert") == "1"
        out = []
        for n, name in enumerate(names):
            table, mine = self._table({"table": name}), ids[part == n]
            rows = self._lookup_inserting(table, mine, f"{meta.get('request_id', '')}/{name}") if insert \
                else table.lookup(mine)
            out.append(encode({}, row=rows))
        self.pulls.add(len(ids))
        return out

    def _lookup_inserting(self, table: EmbeddingTable, ids: np.ndarray, request_id: str) -> np.ndarray:
        """A training pull: counts ``ids`` toward admission once per request id. A retry (same
        id) waits for the first attempt, then only reads: the rows that attempt admitted, no
        second count. Without a request id (older clients) every call counts."""
        key = f"pull:{request_id}"
        entry, first = self._claim(key) if request_id else (_Applied(), True)
        if not first:
            entry.done.wait(timeout=60)
            if entry.result is None:  # the first attempt failed, or is still held: retry later
                raise flight.FlightUnavailableError(f"inserting pull {request_id} is not done yet; retry")
            return table.lookup(ids)
        self.gate.enter()
        try:
            rows = table.lookup(ids, insert=True)
            entry.result = {"ids": len(ids)}
        except Exception:
            with self._applied_lock:  # not counted: a retry may count
                self._applied.pop(key, None)
            raise
        finally:
            self.gate.leave()
            entry.done.set()
        return rows

    def _claim(self, key: str) -> tuple[_Applied, bool]:
        """The dedup-window entry of ``key``, and whether this call created it (a first attempt)."""
        with self._applied_lock:
            entry = self._applied.get(key)
            if entry is not None:
                return entry, False
            entry = self._applied[key] = _Applied()
            while len(self._applied) > DEDUP_WINDOW:
                self._applied.popitem(last=False)
            return entry, True

    def _push(self, body) -> dict:
        if self.role != "training":
            raise flight.FlightServerError("push goes to the training PS; the serving PS is fed by deltas")
        meta, cols = decode(body)
        table, ids, request_id = self._table(meta), cols["id"], meta.get("request_id", "")
        self._check_shard(ids)
        if not request_id:
            raise flight.FlightServerError("push without request_id: retries could apply it twice")
        entry, first = self._claim(request_id)
        if not first:  # a retry: wait for the original and report its outcome
            entry.done.wait(timeout=60)
            if entry.result is None:  # the original failed, or is still held: retry later
                raise flight.FlightUnavailableError(f"push {request_id} is not applied yet; retry")
            with self._applied_lock:
                self.duplicates += 1
            return {**entry.result, "duplicate": True}
        self.gate.enter()
        try:
            applied = table.apply_gradients(ids, cols["grad"])
            self.ledger.record(request_id)
            entry.result = {"applied": applied, "duplicate": False, "incarnation": self.incarnation}
        except Exception:
            with self._applied_lock:  # not applied: a retry may try again
                self._applied.pop(request_id, None)
            raise
        finally:
            self.gate.leave()
            entry.done.set()
        self.pushes.add(len(ids))
        return entry.result

    def stats(self) -> dict:
        return {
            "role": self.role, "shard": self.shard, "shards": self.shards,
            "uptime_s": time.time() - self.started,
            "pulls_per_s": self.pulls.per_second(), "pushes_per_s": self.pushes.per_second(),
            "duplicate_pushes": self.duplicates,
            "tables": {name: t.stats() for name, t in self.tables.items()},
            "sync": self.sync_status, "restored_from": self.restored,
            "ledger": self.ledger.summary() if self.role == "training" else None,
            "unauthenticated": self.token_check.refused if self.token_check else 0,
        }
