"""The candidate side's embedding rows (items, their genres), shared by every feed request and
re-pulled from the serving PS in the background, so that a feed costs one PS round trip (the
user's rows) instead of two.

A feed ranks ~200 candidates; their rows are the same for every user and change only when
training moves them, which reaches the serving PS once per ``paramserver.sync_interval_s``
anyway. Rows here are about ``refresh_s`` older than the serving PS's at most (plus the time of
a pull or two), and older while refreshes fail (``age()``, exported as a metric, says since when:
serving keeps the rows it has while the PS restarts); the user's own rows are never cached (:class:`models.sparse.RequestRows`), so a user's
actions reach their feed as fast as before. An ID seen for the first time is pulled at once,
with the request that needs it. IDs no feed asked for in ``keep_s`` are dropped at the next
refresh, so the cache holds the working set, not the catalogue. ``clear()`` (a new model was
loaded: the serving PS was reset to its snapshot) forgets every row at once, and a refresh that
started before it is discarded.

With ``refresh_s`` 0 the feed pulls every candidate's row per request instead
(``serving.candidate_rows_refresh_s``).

Example::

    rows = CandidateRows(ps, refresh_s=1.0).start()
    got = rows.get({"item_id": np.array([3, 7], np.uint64)})   # {"item_id": [2, dim]}
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from models.sparse import pull_tables

log = logging.getLogger(__name__)


class _Table:
    """One table's cached rows: IDs sorted, rows aligned, and when each ID was last asked for."""

    def __init__(self, ids: np.ndarray, rows: np.ndarray, used: np.ndarray):
        self.ids, self.rows, self.used = ids, rows, used

    @classmethod
    def of(cls, ids: np.ndarray, rows: np.ndarray, used: np.ndarray, base: _Table | None = None) -> _Table:
        """These rows sorted by ID, plus ``base``'s rows of other IDs."""
        if base is not None:
            keep = ~np.isin(base.ids, ids)
            ids, rows, used = (np.concatenate([old[keep], new]) for old, new in
                               ((base.ids, ids), (base.rows, rows), (base.used, used)))
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], rows[order], used[order])

    def find(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions into ``rows``, which of ``wanted`` are cached)."""
        if not len(self.ids):
            return np.zeros(len(wanted), np.int64), np.zeros(len(wanted), bool)
        at = np.minimum(np.searchsorted(self.ids, wanted), len(self.ids) - 1)
        return at, self.ids[at] == wanted


class CandidateRows:
    """See the module docstring. ``source``: the serving PS client (``pull_many``)."""

    def __init__(self, source, refresh_s: float = 1.0, keep_s: float = 300.0, clock=time.monotonic):
        self.source, self.refresh_s, self.keep_s, self.clock = source, refresh_s, keep_s, clock
        self._tables: dict[str, _Table] = {}
        self._lock = threading.Lock()  # guards _tables swaps and _generation
        self._generation = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshes = self.refresh_errors = self.misses = 0
        self.refreshed_at = clock()

    def get(self, ids: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{table: rows [len(ids[table]), dim]}: cached rows, and those never seen pulled now in
        one call (then kept). Raises what the source raises when it must be called and fails."""
        now = self.clock()
        out, missing, places = {}, {}, {}
        tables = self._tables
        for table, wanted in ids.items():
            wanted = np.asarray(wanted, np.uint64)
            cached = tables.get(table)
            if cached is None:
                at, hit = np.zeros(len(wanted), np.int64), np.zeros(len(wanted), bool)
            else:
                at, hit = cached.find(wanted)
                cached.used[at[hit]] = now
            if cached is not None and hit.all():
                out[table] = cached.rows[at]
                continue
            places[table] = (cached, at, hit)
            missing[table] = np.unique(wanted[~hit])
        if missing:
            generation = self._generation
            self.misses += sum(len(m) for m in missing.values())
            pulled = pull_tables(self.source, missing)
            for table, (cached, at, hit) in places.items():
                wanted = np.asarray(ids[table], np.uint64)
                rows = np.empty((len(wanted), pulled[table].shape[1]), np.float32)
                if cached is not None:
                    rows[hit] = cached.rows[at[hit]]
                rows[~hit] = pulled[table][np.searchsorted(missing[table], wanted[~hit])]
                out[table] = rows
            self._add(missing, pulled, now, generation)
        return out

    def pull_many(self, ids: dict[str, np.ndarray], insert: bool = False) -> dict[str, np.ndarray]:
        """:meth:`get`, read as an embedding source (read only: ``insert`` is refused)."""
        if insert:
            raise ValueError("CandidateRows is read only: pull with insert=True from the PS itself")
        return self.get(ids)

    def _add(self, ids: dict[str, np.ndarray], rows: dict[str, np.ndarray], now: float, generation: int) -> None:
        with self._lock:
            if generation != self._generation:  # cleared meanwhile: these rows may be the old model's
                return
            tables = dict(self._tables)
            for table, new in ids.items():  # a racing get may have pulled some too: the newer rows win
                tables[table] = _Table.of(new, rows[table], np.full(len(new), now), tables.get(table))
            self._tables = tables

    def refresh(self) -> int:
        """Pull every row asked for in the last ``keep_s`` again (one call); returns the rows."""
        now = self.clock()
        with self._lock:
            generation, tables = self._generation, self._tables
        keep = {t: c.used >= now - self.keep_s for t, c in tables.items()}
        ids = {t: c.ids[keep[t]] for t, c in tables.items() if keep[t].any()}
        pulled = pull_tables(self.source, ids) if ids else {}
        with self._lock:
            if generation != self._generation:
                return 0
            current = self._tables
            fresh = {}
            for table, wanted in ids.items():
                now_cached = current[table]
                used = now_cached.used[now_cached.find(wanted)[0]]  # asked for during the pull too
                fresh[table] = _Table(wanted, pulled[table], used)
            for table, c in current.items():  # IDs first pulled by a request during this refresh
                before = tables[table].ids if table in tables else np.empty(0, np.uint64)
                added = ~np.isin(c.ids, before)
                if added.any():
                    fresh[table] = _Table.of(c.ids[added], c.rows[added], c.used[added], fresh.get(table))
            self._tables = fresh
        self.refreshes += 1
        self.refreshed_at = now
        return sum(len(v) for v in ids.values())

    def clear(self) -> None:
        """Forget every row (a new model: the serving PS holds its snapshot's rows now)."""
        with self._lock:
            self._generation += 1
            self._tables = {}

    def age(self) -> float:
        """Seconds since the start of the last refresh that succeeded (rows pulled for the first
        time since are newer)."""
        return self.clock() - self.refreshed_at

    def __len__(self) -> int:
        return sum(len(c.ids) for c in self._tables.values())

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the PS restarting: keep the rows, try again
                self.refresh_errors += 1
                log.warning("could not refresh %d cached candidate rows (%s: %s); retrying in %ss",
                            len(self), type(exc).__name__, exc, self.refresh_s)

    def start(self) -> CandidateRows:
        self._thread = threading.Thread(target=self._loop, name="candidate-rows", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
