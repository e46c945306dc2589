"""A feed for one user: Deep Retrieval's beam over learned paths brings candidates, MMoE ranks
them, and the features each shown item was scored with are logged to Kafka ``features``.

Both models come from the ``champion`` bundle (:class:`serving.loader.ChampionLoader`), their
embeddings from the serving PS: the user's rows pulled per request, the candidates' rows from
a cache that re-pulls them every ``serving.candidate_rows_refresh_s``
(:class:`serving.candidate_rows.CandidateRows`; without one, pulled per request too). The score that orders the feed is a weighted sum of the
tasks' probabilities (``serving.task_weights``).

Cold start: a user with no embedding yet (or no history) is still embedded (missing rows read
as zeros) and gets the beam's items; when the beam holds fewer than ``k`` items the feed is
filled from the catalogue of the model, so a feed is never short and never an error.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import numpy as np

from models.sparse import RequestRows
from serving.candidate_rows import CandidateRows
from serving.catalogue import Catalogue
from serving.history import Histories
from streaming.schemas import Features, encode, key_of


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
                 task_weights: dict[str, float] | None = None, candidate_rows: CandidateRows | None = None):
        self.loader, self.catalogue, self.histories = loader, catalogue, histories
        self.candidates = candidates
        self.task_weights = task_weights or {"click": 1.0, "like": 1.0, "finish": 0.5}
        self.candidate_rows = candidate_rows
        self._rows_of: str | None = None  # the model version whose rows candidate_rows holds

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
        rows = RequestRows(model.retriever.source)  # the user's rows: pulled once, read by both models
        [(found, _, paths)] = model.retriever.retrieve_with_paths([{"user_id": user, "sparse": sparse}],
                                                                  k=self.candidates, source=rows)
        retrieved = time.perf_counter()
        path_of = dict(zip(found, paths))
        candidates = list(path_of)
        if len(candidates) < k:  # a short beam (a cold user, few items on its paths): fill up
            seen = set(candidates)
            candidates += [int(i) for i in model.meta["items"] if int(i) not in seen][:k - len(candidates)]
        columns = {"item": (np.asarray(candidates, np.uint64), np.arange(len(candidates), dtype=np.int32)),
                   "genre": self.catalogue.genre_columns(candidates)}
        if self.candidate_rows is not None:
            self._prime(model, rows, columns)
        scores = model.ranker.score_columns(sparse, len(candidates), columns, source=rows)
        total = sum(w * scores[t] for t, w in self.task_weights.items() if t in scores)
        order = np.argsort(-total, kind="stable")[:k]
        if timings is not None:
            timings.update(retrieve=retrieved - started, rank=time.perf_counter() - retrieved)
        request_id, now = uuid.uuid4().hex, int(time.time() * 1000)
        version = f"{model.meta.get('model_name', 'flywheel')}/{model.version}"
        served = []
        for position, n in enumerate(order):
            item = candidates[n]
            features = Features(request_id=request_id, user_id=user, item_id=item, event_time=now,
                                position=position, model_version=version,
                                sparse={**sparse, "item": [item], "genre": self.catalogue.genres.get(item, [])})
            served.append(Served(item, position, float(total[n]),
                                 {t: float(s[n]) for t, s in scores.items()}, features, path_of.get(item)))
        return request_id, version, served

    def _prime(self, model, rows: RequestRows, columns: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Hand the request the candidates' cached rows, so that ranking pulls none."""
        if self._rows_of != model.version:  # a new model: the serving PS was reset to its snapshot
            self.candidate_rows.clear()
            self._rows_of = model.version
        table_of = {s.name: s.table for s in model.ranker.slots}
        wanted: dict[str, list[np.ndarray]] = {}
        for slot, (ids, _) in columns.items():
            if slot in table_of:
                wanted.setdefault(table_of[slot], []).append(ids)
        ids = {table: np.unique(np.concatenate(parts)) for table, parts in wanted.items()}
        got = self.candidate_rows.get(ids)
        rows.prime({table: (ids[table], got[table]) for table in ids})


def log_features(producer, topic: str, served: list[Served]) -> None:
    """Send the served items' features to Kafka (asynchronously; the producer batches them)."""
    for s in served:
        producer.send(topic, key=key_of(s.features), value=encode(s.features))
