"""Baselines every learned model stands beside, measured in the same run on the same split.

- :class:`MostPopular`: the items engaged with most in a trailing window before the end of
  training (all of it when no window is given). The list a recommender engineer checks
  first, and what a cold user gets from most production systems.
- :class:`EASE` (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW'19): an
  item-item weight matrix in closed form, ``B = I - P / diag(P)`` with
  ``P = (X^T X + lambda I)^-1``; a user's scores are their history row times ``B``. One of the
  strongest classical baselines on MovieLens. A user without history gets the popularity
  order (their EASE scores are all zero).

Both take interactions as arrays of (user, item) IDs and return item IDs; no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class MostPopular:
    """Items ranked by engagements in ``[end - window_s, end]`` (ties: more engagements over
    all of training first, then the smaller ID).

    Args:
      window_s: the trailing window in the units of ``times`` (None: all of training).
    """

    def __init__(self, window_s: float | None = None):
        self.window_s = window_s
        self.order: np.ndarray = np.zeros(0, np.int64)
        self.counts: dict[int, float] = {}

    def fit(self, items: Iterable[int], times: Iterable[float] | None = None) -> MostPopular:
        items = np.asarray(list(items), np.int64)
        if len(items) == 0:
            raise ValueError("MostPopular.fit: no interactions to count")
        recent = items
        if self.window_s is not None:
            if times is None:
                raise ValueError("MostPopular with a window needs the interactions' times")
            times = np.asarray(list(times), np.float64)
            recent = items[times >= times.max() - self.window_s]
        ids, total = np.unique(items, return_counts=True)
        in_window = dict(zip(*np.unique(recent, return_counts=True)))
        window = np.array([in_window.get(i, 0) for i in ids], np.float64)
        self.order = ids[np.lexsort((ids, -total, -window))]
        self.counts = {int(i): float(in_window.get(i, 0)) for i in ids}
        return self

    def score(self, items: Iterable[int]) -> np.ndarray:
        """Each item's engagements in the window (0 for an item never seen): a ranking score."""
        return np.array([self.counts.get(int(i), 0.0) for i in items], np.float64)

    def recommend(self, k: int, exclude: set[int] = frozenset()) -> list[int]:
        """The top ``k`` items not in ``exclude``."""
        out = []
        for item in self.order.tolist():
            if item not in exclude:
                out.append(item)
                if len(out) == k:
                    break
        return out


class EASE:
    """Closed-form item-item model (see the module docstring).

    Args:
      l2: the ridge weight lambda (Steck's MovieLens settings are in the hundreds).
      max_items: refuse catalogues larger than this (items x items float64 matrices, a few alive
        at once, and an O(n^3) inverse: 10,000 items take ~2.4 GB).
    """

    def __init__(self, l2: float = 200.0, max_items: int = 10_000):
        self.l2, self.max_items = l2, max_items
        self.items: np.ndarray = np.zeros(0, np.int64)
        self.weights: np.ndarray = np.zeros((0, 0), np.float32)
        self.history: dict[int, np.ndarray] = {}
        self.popular = MostPopular()

    def fit(self, users: Iterable[int], items: Iterable[int]) -> EASE:
        users, items = np.asarray(list(users), np.int64), np.asarray(list(items), np.int64)
        self.items, col = np.unique(items, return_inverse=True)
        n = len(self.items)
        if n > self.max_items:
            raise ValueError(f"EASE over {n} items needs an {n}x{n} inverse; max_items is {self.max_items} "
                             "(raise it if the memory is there, or evaluate on a sample of the catalogue)")
        ids, row = np.unique(users, return_inverse=True)
        order = np.lexsort((col, row))
        row, col = row[order], col[order]
        self.history = {}
        gram = np.zeros((n, n), np.float64)  # X^T X from each user's item set, without the users x items X
        for r, start in zip(*np.unique(row, return_index=True)):
            seen = np.unique(col[start:start + np.searchsorted(row[start:], r, side="right")])  # repeats count once
            gram[np.ix_(seen, seen)] += 1.0
            self.history[int(ids[r])] = seen
        gram[np.diag_indices(n)] += self.l2
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)
        b[np.diag_indices(n)] = 0.0
        self.weights = b.astype(np.float32)
        self.popular.fit(items)
        rank_of = {int(i): r for r, i in enumerate(self.popular.order.tolist())}
        self._tie = np.array([rank_of[int(i)] for i in self.items])
        return self

    def scores(self, user: int) -> np.ndarray:
        """The user's score for every item of :attr:`items` (zeros without history)."""
        seen = self.history.get(int(user))
        if seen is None or len(seen) == 0:
            return np.zeros(len(self.items), np.float32)
        return self.weights[seen].sum(axis=0)

    def recommend(self, user: int, k: int, exclude: set[int] = frozenset()) -> list[int]:
        """The user's top ``k`` items not in ``exclude``; ties (a cold user: all) by popularity."""
        out = []
        for n in np.lexsort((self._tie, -self.scores(user))).tolist():
            item = int(self.items[n])
            if item not in exclude:
                out.append(item)
                if len(out) == k:
                    break
        return out
