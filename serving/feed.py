"""A feed for one user: Deep Retrieval's beam over learned paths brings candidates, MMoE ranks
them, and the features each shown item was scored with are logged to Kafka ``features``.

Both models come from the ``champion`` bundle (:class:`serving.loader.ChampionLoader`), their
embeddings from the serving PS: the user's rows pulled per request, the candidates' rows from
a cache that re-pulls them every ``serving.candidate_rows_refresh_s``
(:class:`serving.candidate_rows.CandidateRows`; without one, pulled per request too). The
dense graphs run in NumPy (serving/forward.py, ``serving.forward``): on a version's first feed
both passes run, and the NumPy one serves the version only when it chose the same candidates
and scored them alike; otherwise TensorFlow does. The score that orders the feed is a weighted
sum of the tasks' probabilities (``serving.task_weights``).

With a traffic split (``serving.traffic``, serving/arms.py) a user may be in the
``popularity`` arm instead: the most clicked items of a trailing window, logged the same way
with ``model_version`` ``popularity:<window>``.

Cold start: a user with no embedding yet (or no history) is still embedded (missing rows read
as zeros) and gets the beam's items; when the beam holds fewer than ``k`` items the feed is
filled from the catalogue of the model, so a feed is never short and never an error.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np

from models.sparse import RequestRows, pull_tables
from serving.candidate_rows import CandidateRows
from serving.arms import TrafficSplit, Trending
from serving.catalogue import Catalogue
from serving.forward import Forward, agrees, segment_mean
from serving.history import Histories
from streaming.schemas import Features, encode, key_of

log = logging.getLogger(__name__)


class NoModel(RuntimeError):
    """No ``champion`` is loaded yet: run the daily retrain (``make retrain``) to publish one."""


@dataclass(frozen=True)
class Served:
    """One shown item: what the response carries, and the features that were logged."""

    item_id: int
    position: int
    score: float
    scores: dict[str, float]
    features: Features
    path: tuple[int, ...] | None = None  # the retrieval path that brought it in (None: catalogue fill)


class FeedBuilder:
    """Turns (user, k) into a ranked list; see the module docstring."""

    def __init__(self, loader, catalogue: Catalogue, histories: Histories, candidates: int = 200,
                 task_weights: dict[str, float] | None = None, candidate_rows: CandidateRows | None = None,
                 forward: str = "numpy", split: TrafficSplit | None = None, trending: Trending | None = None):
        self.loader, self.catalogue, self.histories = loader, catalogue, histories
        if split is not None and "popularity" in split.shares and trending is None:
            raise ValueError("a traffic split with a popularity arm needs its Trending counts")
        self.split, self.trending = split, trending  # the A/B test (serving/arms.py); None: champion only
        self._trending_of: str | None = None  # the model version whose recent clicks trending starts from
        self.candidates = candidates
        self.task_weights = task_weights or {"click": 1.0, "like": 1.0, "finish": 0.5}
        self.candidate_rows = candidate_rows
        self._rows_of: str | None = None  # the model version whose rows candidate_rows holds
        self.forward = forward
        self._pass: _Pass | None = None  # how the loaded version is served (serving/forward.py)
        self._lock = threading.Lock()
        self.forward_mismatches = 0

    @property
    def forward_in_use(self) -> str:
        """``numpy`` (the version's NumPy pass agreed with TensorFlow's), ``tensorflow``, or
        ``pending`` (no feed of this version has run the check yet)."""
        p = self._pass
        return "tensorflow" if p is None else {"pending": "pending", "checking": "pending"}.get(p.state, p.state)

    def user_sparse(self, user: int) -> dict[str, list[int]]:
        return {"user": [user], "history": self.histories.get(user), "user_attr": self.catalogue.users.get(user, [])}

    def build(self, user: int, k: int, timings: dict[str, float] | None = None) -> tuple[str, str, list[Served]]:
        """(request_id, model_version, the top ``k`` items); ``timings`` (if given) gets the
        seconds spent in ``retrieve`` and ``rank``. Raises NoModel."""
        model = self.loader.current
        if model is None:
            raise NoModel(NoModel.__doc__)
        started = time.perf_counter()
        sparse = self.user_sparse(user)
        if self.split is not None and self.split.arm(user) == "popularity":
            return self._popular(model, user, sparse, k, started, timings)
        p, how = self._choose(model)
        if how == "check":
            path_of, candidates, scores, retrieved = self._check(model, p, user, sparse, k)
        elif how == "numpy":
            path_of, candidates, scores, retrieved = self._with_numpy(model, p.fast, sparse, k)
        else:
            path_of, candidates, scores, retrieved = self._with_tensorflow(model, user, sparse, k)
        total = sum(w * scores[t] for t, w in self.task_weights.items() if t in scores)
        order = np.argsort(-total, kind="stable")[:k]
        if timings is not None:
            timings.update(retrieve=retrieved - started, rank=time.perf_counter() - retrieved)
        request_id, now = uuid.uuid4().hex, int(time.time() * 1000)
        version = f"{model.meta.get('model_name', 'flywheel')}/{model.version}"
        served = []
        for position, n in enumerate(order):
            item = candidates[n]
            features = self._features(request_id, user, item, now, position, version, sparse)
            served.append(Served(item, position, float(total[n]),
                                 {t: float(s[n]) for t, s in scores.items()}, features, path_of.get(item)))
        return request_id, version, served

    def _popular(self, model, user: int, sparse: dict, k: int, started: float, timings: dict | None):
        """The popularity arm: the most clicked items of the trailing window the user has not
        clicked lately, logged like the champion's (their features train the models alike)."""
        if self._trending_of != model.version:  # start (and restart) from the bundle's recent clicks
            self.trending.set_base(model.retriever.items, model.retriever.popularity)
            self._trending_of = model.version
        top = self.trending.top(k, exclude=set(sparse["history"]))
        if timings is not None:
            timings.update(retrieve=time.perf_counter() - started, rank=0.0)
        request_id, now = uuid.uuid4().hex, int(time.time() * 1000)
        version = f"popularity:{self.trending.window_s / 3600:g}h"
        return request_id, version, [
            Served(item, position, clicks, {}, self._features(request_id, user, item, now, position, version, sparse))
            for position, (item, clicks) in enumerate(top)]

    def _features(self, request_id: str, user: int, item: int, now: int, position: int, version: str,
                  sparse: dict) -> Features:
        """What is logged for one shown item: the user's slots plus the item's own."""
        return Features(request_id=request_id, user_id=user, item_id=item, event_time=now, position=position,
                        model_version=version,
                        sparse={**sparse, "item": [item], "genre": self.catalogue.genres.get(item, [])})

    def _candidates(self, model, path_of: dict[int, tuple[int, ...]], k: int) -> list[int]:
        """The beam's items, then (a short beam: a cold user, few items on its paths) the
        catalogue's, so that there are at least ``k``."""
        candidates = list(path_of)
        if len(candidates) < k:
            seen = set(candidates)
            candidates += [int(i) for i in model.meta["items"] if int(i) not in seen][:k - len(candidates)]
        return candidates

    def _columns(self, candidates: list[int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The candidates' own slots: {slot: (IDs, the candidate each belongs to)}."""
        return {"item": (np.asarray(candidates, np.uint64), np.arange(len(candidates), dtype=np.int32)),
                "genre": self.catalogue.genre_columns(candidates)}

    def _with_tensorflow(self, model, user: int, sparse: dict, k: int, source=None):
        """(path of each item, candidates, {task: scores}, when retrieval ended); ``source``
        overrides where every row is read (the check: one memo for both passes)."""
        rows = RequestRows(source or model.retriever.source)  # the user's rows: pulled once, read by both models
        [(found, _, paths)] = model.retriever.retrieve_with_paths([{"user_id": user, "sparse": sparse}],
                                                                  k=self.candidates, source=rows)
        retrieved = time.perf_counter()
        path_of = dict(zip(found, paths))
        candidates = self._candidates(model, path_of, k)
        columns = self._columns(candidates)
        if self.candidate_rows is not None and source is None:
            ids = self._candidate_ids(model, columns)
            got = self._cache(model).get(ids)
            rows.prime({table: (ids[table], got[table]) for table in ids})
        scores = model.ranker.score_columns(sparse, len(candidates), columns, source=rows)
        return path_of, candidates, scores, retrieved

    def _with_numpy(self, model, fast: Forward, sparse: dict, k: int, source=None):
        """:meth:`_with_tensorflow` with the NumPy pass."""
        table_of = {s.name: s.table for s in model.ranker.slots + model.retriever.slots}
        shared = {slot: np.asarray(ids, np.uint64) for slot, ids in sparse.items() if slot in table_of}
        pooled = self._pooled(source or model.retriever.source, table_of, shared, 1)  # the user's rows: one call
        pooled = {slot: v[0] for slot, v in pooled.items()}
        logits, beams, log_probs = fast.retriever.search(fast.retriever.user(pooled))
        found, _, paths = model.retriever.candidates_of(logits, beams, log_probs, self.candidates)
        retrieved = time.perf_counter()
        path_of = dict(zip(found, paths))
        candidates = self._candidates(model, path_of, k)
        n = len(candidates)
        columns = {slot: c for slot, c in self._columns(candidates).items() if slot in table_of}
        candidate_source = source or (self._cache(model) if self.candidate_rows is not None else model.ranker.source)
        per_candidate = self._pooled(candidate_source,
                                     table_of, {slot: ids for slot, (ids, _) in columns.items()}, n,
                                     {slot: segments for slot, (_, segments) in columns.items()})
        parts = [np.broadcast_to(pooled[s.name], (n, len(pooled[s.name]))) if s.name in pooled
                 else per_candidate[s.name] for s in model.ranker.slots]
        features = np.concatenate(parts + [np.zeros((n, fast.ranker.dense), np.float32)], axis=1)
        return path_of, candidates, fast.ranker.scores(features), retrieved

    @staticmethod
    def _pooled(source, table_of: dict[str, str], ids: dict[str, np.ndarray], n: int,
                segments: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """{slot: [n, dim]}: the mean row of each slot's IDs per segment (all in segment 0 when
        ``segments`` is None), every table's rows in one pull from ``source``."""
        wanted = _by_table(table_of, ids)
        rows = pull_tables(source, {t: np.concatenate(parts) for t, parts in wanted.items()})
        out, offset = {}, dict.fromkeys(wanted, 0)
        for slot, slot_ids in ids.items():
            table, m = table_of[slot], len(slot_ids)
            mine = rows[table][offset[table]:offset[table] + m]
            offset[table] += m
            seg = np.zeros(m, np.int32) if segments is None else segments[slot]
            out[slot] = segment_mean(mine, seg, n)
        return out

    def _candidate_ids(self, model, columns: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        table_of = {s.name: s.table for s in model.ranker.slots}
        wanted = _by_table(table_of, {slot: ids for slot, (ids, _) in columns.items() if slot in table_of})
        return {table: np.unique(np.concatenate(parts)) for table, parts in wanted.items()}

    def _cache(self, model) -> CandidateRows:
        """The candidate rows, emptied when the model changed (the serving PS was reset to the
        new version's snapshot)."""
        if self._rows_of != model.version:
            self.candidate_rows.clear()
            self._rows_of = model.version
        return self.candidate_rows

    def _choose(self, model) -> tuple[_Pass, str]:
        """This feed's pass: ``numpy``, ``tensorflow``, or ``check`` (the first feed of a version
        whose NumPy pass was built: exactly one feed runs the check, the others meanwhile use
        TensorFlow)."""
        with self._lock:
            p = self._pass
            if p is None or p.version != model.version:
                fast, state = None, "tensorflow"
                if self.forward == "numpy":
                    try:
                        fast, state = Forward.of(model), "pending"
                    except Exception as exc:  # noqa: BLE001 - a layer it does not know, or a model it cannot read
                        log.warning("model version %s is served by TensorFlow: no NumPy pass (%s: %s)",
                                    model.version, type(exc).__name__, exc)
                p = self._pass = _Pass(model.version, fast, state)
            if p.state == "pending":
                p.state = "checking"
                return p, "check"
            return p, "numpy" if p.state == "numpy" else "tensorflow"

    def _check(self, model, p: _Pass, user: int, sparse: dict, k: int):
        """Both passes on one snapshot of the rows (training moves them): the NumPy pass serves
        the version only when it retrieved the same items on the same paths and scored them
        alike. This feed is answered with TensorFlow's result."""
        memo = RequestRows(model.retriever.source)
        want = self._with_tensorflow(model, user, sparse, k, source=memo)
        try:
            why = _difference(want, self._with_numpy(model, p.fast, sparse, k, source=memo))
        except Exception as exc:  # noqa: BLE001 - a NumPy pass that fails must not fail the version
            why = f"it failed: {type(exc).__name__}: {exc}"
        with self._lock:
            if self._pass is p:  # still this version (a new one starts its own check)
                p.state = "tensorflow" if why else "numpy"
        if why:
            self.forward_mismatches += 1
            log.error("model version %s is served by TensorFlow: the NumPy forward pass disagrees (%s)",
                      model.version, why)
        return want


@dataclass
class _Pass:
    """How one model version is served: its NumPy pass (None: none) and where its check stands:
    ``pending``, ``checking``, ``numpy`` (agreed) or ``tensorflow``."""

    version: str
    fast: Forward | None
    state: str


def _by_table(table_of: dict[str, str], ids: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Slots' IDs grouped by the table they live in (in slot order)."""
    wanted: dict[str, list[np.ndarray]] = {}
    for slot, slot_ids in ids.items():
        wanted.setdefault(table_of[slot], []).append(slot_ids)
    return wanted


def _difference(want, got) -> str | None:
    """Why two passes' (paths, candidates, scores) differ, or None when they agree: the same
    items on the same paths, and per item the same scores (items whose reranker logits nearly
    tie may come in either order)."""
    want_paths, want_items, want_scores, _ = want
    got_paths, got_items, got_scores, _ = got
    if want_paths != got_paths:
        alike = sum(got_paths.get(i) == path for i, path in want_paths.items())
        return f"{alike} of {len(want_paths)} retrieved items on the same path"
    if set(want_items) != set(got_items):
        return f"{len(set(want_items) & set(got_items))} of {len(want_items)} candidates alike"
    order = np.argsort(want_items)
    position = {item: n for n, item in enumerate(got_items)}
    got_scores = {t: v[[position[want_items[n]] for n in order]] for t, v in got_scores.items()}
    want_scores = {t: v[order] for t, v in want_scores.items()}
    if agrees(want_scores, got_scores):
        return None
    if want_scores.keys() != got_scores.keys():
        return f"tasks {sorted(want_scores)} against {sorted(got_scores)}"
    gap = max(float(np.max(np.abs(want_scores[t] - got_scores[t]))) for t in want_scores)
    return f"largest score difference {gap:.3g}"


def log_features(producer, topic: str, served: list[Served]) -> None:
    """Send the served items' features to Kafka (asynchronously; the producer batches them)."""
    for s in served:
        producer.send(topic, key=key_of(s.features), value=encode(s.features))
