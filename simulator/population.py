"""The simulated users: who comes back when, and what each does with the items a feed shows.

A history (any source, through the data contract: :func:`datasets.load`) is split in time
order (:func:`datasets.history.time_split`): the earlier events are what the models were
trained on (the backfill); the held-out later events (default the last 20 % by time) are what
the users will do. Each held-out request is one *session*: the user opens the app at that
moment and is shown a feed.

Each event has a *level*, how far the user went (:func:`datasets.history.level`): 0 shown
without a positive action, 1 click, 2 like, 3 finish. What a user does with a shown item:

- an item of the user's held-out events: by its level (:func:`actions_for_level`): 0 skip,
  1 click, 2 click + like, 3 click + like + finish;
- any other item: by the user's *attribute affinity*, the user's mean level per item attribute
  (genre, category, ...) over all their events, shrunk towards their overall mean
  (``smoothing`` pseudo-events), in levels.
  ``p(click) = sigmoid(logit(base_rate) + slope * (affinity - population mean))``: an item of
  average attributes is clicked with ``base_rate``; one level above average multiplies the
  odds by ``e**slope``. A clicked item gets an imagined level (affinity + noise, 0.5 levels)
  that adds like (>= 2) and finish (3). Items not clicked get no action (an impression).

**Drift.** ``drifted=True`` rotates each user's affinities over the attributes by a per-user
offset of 1..G-1 (seeded, so every run drifts the same way and no attribute keeps its value):
tastes change, and a system that learns online can follow. A drifted user acts on every item
by affinity: the held-out events describe the old taste.

Everything here is a pure function of the data, the arguments and the ``rng`` passed in, so
runs are reproducible and testable without HTTP.

Example::

    import numpy as np
    from datasets import load
    from simulator.population import Population
    population = Population.from_dataset(load("ml-100k/"))
    population.respond(user=196, items=[242, 302], rng=np.random.default_rng(0))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datasets.history import Dataset, level, time_split

BASE_RATE = 0.07  # p(click) on an unseen item of average affinity
SLOPE = 1.5  # log-odds of a click per level of affinity above the population mean
SMOOTHING = 5.0  # pseudo-events at the user's mean added to each attribute's mean
IMAGINED_NOISE = 0.5  # levels: spread of the level a user imagines for a clicked unseen item
ACTIONS = (("skip",), ("click",), ("click", "like"), ("click", "like", "finish"))


@dataclass(frozen=True)
class Reaction:
    """One action of a user on one shown item (``action`` is an ``ActionType``)."""

    item_id: int
    action: str


def actions_for_level(lv: int) -> tuple[str, ...]:
    """The actions a level stands for: 0 skip, 1 click, 2 click + like, 3 click + like + finish."""
    return ACTIONS[min(max(int(lv), 0), 3)]


class Population:
    """Users of a history: their sessions, their tastes and their reactions.

    Args:
      known: events (``Dataset.events``: user, item, time in unix s, request, task labels)
        before the split: known taste.
      heldout: the later events: the sessions, and what each user did with those items.
      genres: item -> attribute feature IDs (``Dataset.item_attrs``).
      base_rate: p(click) on an unseen item of average affinity, 0 < p < 1.
      slope: log-odds of a click per level of affinity above the population mean.
      smoothing: pseudo-events at the user's mean added to each attribute's mean.
      seed: fixes each user's drift offset.
    """

    def __init__(self, known: pd.DataFrame, heldout: pd.DataFrame, genres: dict[int, list[int]], *,
                 base_rate: float = BASE_RATE, slope: float = SLOPE, smoothing: float = SMOOTHING, seed: int = 0):
        if heldout.empty:
            raise ValueError("no held-out events to replay: the data is empty or holdout is too small")
        if not 0 < base_rate < 1:
            raise ValueError(f"base_rate {base_rate}: expected 0 < p < 1")
        self.heldout = heldout.sort_values("time", kind="stable").reset_index(drop=True)
        self.base_logit = float(np.log(base_rate / (1 - base_rate)))
        self.slope = slope
        self.heldout["level"] = level(self.heldout)
        self._levels = {int(u): dict(zip(g["item"].tolist(), g["level"].tolist()))
                        for u, g in self.heldout.groupby("user")}
        ratings = pd.concat([known.assign(level=level(known)), self.heldout], ignore_index=True)
        self.mean = float(ratings["level"].mean())
        self.genre_ids = sorted({g for gs in genres.values() for g in gs})
        self._item_genres = self._genre_columns(genres)
        self._users = {int(u): n for n, u in enumerate(np.unique(ratings["user"]))}
        self._affinity = self._genre_affinity(ratings, smoothing)
        g = max(len(self.genre_ids), 2)
        self._drift = np.random.default_rng(seed).integers(1, g, size=len(self._users))

    @classmethod
    def from_dataset(cls, data: Dataset, holdout: float = 0.2, **kwargs) -> Population:
        """Split ``data`` in time order: the last ``holdout`` share of events is replayed."""
        known, heldout = time_split(data.events, holdout)
        return cls(known, heldout, data.item_attrs, **kwargs)

    # -- tastes ------------------------------------------------------------------------------
    def _genre_columns(self, genres: dict[int, list[int]]) -> dict[int, np.ndarray]:
        column = {g: j for j, g in enumerate(self.genre_ids)}
        return {int(i): np.array([column[g] for g in gs], dtype=np.int64) for i, gs in genres.items() if gs}

    def _genre_affinity(self, ratings: pd.DataFrame, smoothing: float) -> np.ndarray:
        """users x attributes: smoothed mean level; attributes a user never met get their mean."""
        users = ratings["user"].map(self._users).to_numpy()
        n_users, n_genres = len(self._users), len(self.genre_ids)
        stars = ratings["level"].to_numpy(float)
        user_mean = np.bincount(users, weights=stars, minlength=n_users) / np.maximum(
            np.bincount(users, minlength=n_users), 1)
        item_ids, items = np.unique(ratings["item"].to_numpy(), return_inverse=True)
        has_genre = np.zeros((len(item_ids), n_genres), dtype=bool)
        for n, item in enumerate(item_ids.tolist()):
            has_genre[n, self._item_genres.get(item, [])] = True
        sums, counts = np.zeros((n_users, n_genres)), np.zeros((n_users, n_genres))
        for j in range(n_genres):  # one pass per genre: memory stays at one mask of the ratings
            rated = has_genre[items, j]
            sums[:, j] = np.bincount(users[rated], weights=stars[rated], minlength=n_users)
            counts[:, j] = np.bincount(users[rated], minlength=n_users)
        return (sums + smoothing * user_mean[:, None]) / (counts + smoothing)

    def affinity(self, user: int, drifted: bool = False) -> dict[int, float]:
        """Attribute feature ID -> the user's affinity in levels (rotated when ``drifted``)."""
        row = self._row(user, drifted)
        return dict(zip(self.genre_ids, row.tolist()))

    def _row(self, user: int, drifted: bool) -> np.ndarray:
        n = self._users.get(int(user))
        if n is None:
            return np.full(len(self.genre_ids), self.mean)
        row = self._affinity[n]
        return np.roll(row, int(self._drift[n])) if drifted else row

    def item_affinity(self, user: int, item: int, drifted: bool = False) -> float:
        """The user's mean affinity over the item's attributes (the population mean if it has none)."""
        columns = self._item_genres.get(int(item))
        if columns is None or not len(self.genre_ids):
            return self.mean
        return float(self._row(user, drifted)[columns].mean())

    def click_probability(self, user: int, item: int, drifted: bool = False) -> float:
        """p(click) of an item not in the user's held-out events, from the attribute affinity."""
        z = self.base_logit + self.slope * (self.item_affinity(user, item, drifted) - self.mean)
        return float(1 / (1 + np.exp(-z)))

    # -- behaviour ---------------------------------------------------------------------------
    def level(self, user: int, item: int) -> int | None:
        """The level of the user's held-out event on ``item``, or None."""
        return self._levels.get(int(user), {}).get(int(item))

    def respond(self, user: int, items: list[int], rng: np.random.Generator,
                drifted: bool = False) -> list[Reaction]:
        """What ``user`` does with the shown ``items`` (feed order), as reactions in that order.

        Args:
          user: a user ID of the data (an unknown user acts with the population's mean taste).
          items: the item IDs shown.
          rng: the source of randomness; the same state gives the same reactions.
          drifted: act by the rotated affinities, ignoring the held-out events.
        """
        out: list[Reaction] = []
        for item in items:
            known = None if drifted else self.level(user, item)
            if known is None:
                actions = self._by_affinity(user, item, rng, drifted)
            else:
                actions = actions_for_level(known)
            out.extend(Reaction(int(item), a) for a in actions)
        return out

    def _by_affinity(self, user: int, item: int, rng: np.random.Generator, drifted: bool) -> tuple[str, ...]:
        if rng.random() >= self.click_probability(user, item, drifted):
            return ()
        imagined = round(self.item_affinity(user, item, drifted) + rng.normal(0, IMAGINED_NOISE))
        return actions_for_level(max(imagined, 1))

    # -- sessions ----------------------------------------------------------------------------
    def sessions(self, users: int | None = None) -> pd.DataFrame:
        """The held-out requests as sessions (columns user, time in unix s), in time order.

        Args:
          users: keep only the first ``users`` distinct users to appear (None: all).
        """
        sessions = self.heldout.drop_duplicates(["user", "request"])[["user", "time"]]
        if users is not None:
            if users < 1:
                raise ValueError(f"users = {users}: expected at least 1 (or None for all)")
            chosen = pd.unique(sessions["user"])[:users]
            sessions = sessions[sessions["user"].isin(chosen)]
        return sessions.reset_index(drop=True)


def load_population(folder: str | Path | None, holdout: float = 0.2, fmt: str = "auto",
                    actions: dict[str, list[str]] | None = None, **kwargs) -> Population:
    """The population of a history folder (see :class:`Population` for ``kwargs``).

    Raises:
      FileNotFoundError: no folder given, or it does not exist or holds no history.
      datasets.contract.ContractError: the folder breaks the data contract.
    """
    from datasets import load

    if folder is None:
        raise FileNotFoundError("no data folder to replay: pass --data <folder> or set simulator.data "
                                "(FLYWHEEL__SIMULATOR__DATA)")
    return Population.from_dataset(load(folder, fmt, actions), holdout, **kwargs)
