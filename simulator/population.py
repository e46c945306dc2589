"""The simulated users: who comes back when, and what each does with the items a feed shows.

A MovieLens history is split in time order (:func:`models.movielens.time_split`): the earlier
ratings are what the models were trained on (the backfill); the held-out later ratings
(default the last 20 % by time) are what the users will do. Each held-out rating is one
*session*: the user opens the app at that moment and is shown a feed.

What a user does with a shown item:

- an item the user rated in the held-out part: by the rating (:func:`actions_for_rating`):
  >= 4 click + like, 5 also finish, 3 click, <= 2 skip (half stars: 3.5 clicks, 4.5 likes);
- any other item: by the user's *genre affinity*, the user's mean rating per genre over all
  their ratings, shrunk towards their overall mean (``smoothing`` pseudo-ratings), in stars.
  ``p(click) = sigmoid(logit(base_rate) + slope * (affinity - population mean))``: an item of
  an average genre is clicked with ``base_rate``; one star above average multiplies the odds
  by ``e**slope``. A clicked item gets an imagined rating (affinity + noise, 0.5 stars) that
  adds like (>= 4) and finish (>= 5). Items not clicked get no action (an impression).

**Drift.** ``drifted=True`` rotates each user's affinities over the genres by a per-user
offset of 1..G-1 (seeded, so every run drifts the same way and no genre keeps its value):
tastes change, and a system that learns online can follow. A drifted user acts on every item
by affinity: the held-out ratings describe the old taste.

Everything here is a pure function of the data, the arguments and the ``rng`` passed in, so
runs are reproducible and testable without HTTP.

Example::

    import numpy as np
    from models.movielens import load
    from simulator.population import Population
    population = Population.from_movielens(load("../shared/datasets/ml-100k"))
    population.respond(user=196, items=[242, 302], rng=np.random.default_rng(0))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.movielens import MovieLens, load, time_split

BASE_RATE = 0.07  # p(click) on an unrated item of average affinity
SLOPE = 1.5  # log-odds of a click per star of affinity above the population mean
SMOOTHING = 5.0  # pseudo-ratings at the user's mean added to each genre's mean
IMAGINED_NOISE = 0.5  # stars: spread of the rating a user imagines for a clicked unrated item


@dataclass(frozen=True)
class Reaction:
    """One action of a user on one shown item (``action`` is an ``ActionType``)."""

    item_id: int
    action: str


def actions_for_rating(rating: float) -> tuple[str, ...]:
    """The actions a rating stands for: >= 4 click + like, 5 also finish, >= 3 click, else skip."""
    if rating < 3:
        return ("skip",)
    return ("click",) + (("like",) if rating >= 4 else ()) + (("finish",) if rating >= 5 else ())


class Population:
    """Users of a MovieLens history: their sessions, their tastes and their reactions.

    Args:
      known: ratings (user, item, rating, time in unix s) before the split: known taste.
      heldout: the later ratings: the sessions, and the items each user will rate.
      genres: item -> genre feature IDs (``MovieLens.genres``).
      base_rate: p(click) on an unrated item of average affinity, 0 < p < 1.
      slope: log-odds of a click per star of affinity above the population mean.
      smoothing: pseudo-ratings at the user's mean added to each genre's mean.
      seed: fixes each user's drift offset.
    """

    def __init__(self, known: pd.DataFrame, heldout: pd.DataFrame, genres: dict[int, list[int]], *,
                 base_rate: float = BASE_RATE, slope: float = SLOPE, smoothing: float = SMOOTHING, seed: int = 0):
        if heldout.empty:
            raise ValueError("no held-out ratings to replay: the data is empty or holdout is too small")
        if not 0 < base_rate < 1:
            raise ValueError(f"base_rate {base_rate}: expected 0 < p < 1")
        self.heldout = heldout.sort_values("time", kind="stable").reset_index(drop=True)
        self.base_logit = float(np.log(base_rate / (1 - base_rate)))
        self.slope = slope
        self._rated = {int(u): dict(zip(g["item"].tolist(), g["rating"].tolist()))
                       for u, g in self.heldout.groupby("user")}
        ratings = pd.concat([known, self.heldout], ignore_index=True)
        self.mean = float(ratings["rating"].mean())
        self.genre_ids = sorted({g for gs in genres.values() for g in gs})
        self._item_genres = self._genre_columns(genres)
        self._users = {int(u): n for n, u in enumerate(np.unique(ratings["user"]))}
        self._affinity = self._genre_affinity(ratings, smoothing)
        g = max(len(self.genre_ids), 2)
        self._drift = np.random.default_rng(seed).integers(1, g, size=len(self._users))

    @classmethod
    def from_movielens(cls, data: MovieLens, holdout: float = 0.2, **kwargs) -> Population:
        """Split ``data`` in time order: the last ``holdout`` share of ratings is replayed."""
        known, heldout = time_split(data.ratings, holdout)
        return cls(known, heldout, data.genres, **kwargs)

    # -- tastes ------------------------------------------------------------------------------
    def _genre_columns(self, genres: dict[int, list[int]]) -> dict[int, np.ndarray]:
        column = {g: j for j, g in enumerate(self.genre_ids)}
        return {int(i): np.array([column[g] for g in gs], dtype=np.int64) for i, gs in genres.items() if gs}

    def _genre_affinity(self, ratings: pd.DataFrame, smoothing: float) -> np.ndarray:
        """users x genres: smoothed mean rating (stars); genres a user never rated get their mean."""
        users = ratings["user"].map(self._users).to_numpy()
        n_users, n_genres = len(self._users), len(self.genre_ids)
        stars = ratings["rating"].to_numpy(float)
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
        """Genre feature ID -> the user's affinity in stars (rotated when ``drifted``)."""
        row = self._row(user, drifted)
        return dict(zip(self.genre_ids, row.tolist()))

    def _row(self, user: int, drifted: bool) -> np.ndarray:
        n = self._users.get(int(user))
        if n is None:
            return np.full(len(self.genre_ids), self.mean)
        row = self._affinity[n]
        return np.roll(row, int(self._drift[n])) if drifted else row

    def item_affinity(self, user: int, item: int, drifted: bool = False) -> float:
        """The user's mean affinity over the item's genres (the population mean if it has none)."""
        columns = self._item_genres.get(int(item))
        if columns is None or not len(self.genre_ids):
            return self.mean
        return float(self._row(user, drifted)[columns].mean())

    def click_probability(self, user: int, item: int, drifted: bool = False) -> float:
        """p(click) of an item the user has not rated, from the genre affinity."""
        z = self.base_logit + self.slope * (self.item_affinity(user, item, drifted) - self.mean)
        return float(1 / (1 + np.exp(-z)))

    # -- behaviour ---------------------------------------------------------------------------
    def rating(self, user: int, item: int) -> float | None:
        """The user's held-out rating of ``item``, or None."""
        return self._rated.get(int(user), {}).get(int(item))

    def respond(self, user: int, items: list[int], rng: np.random.Generator,
                drifted: bool = False) -> list[Reaction]:
        """What ``user`` does with the shown ``items`` (feed order), as reactions in that order.

        Args:
          user: a user ID of the data (an unknown user acts with the population's mean taste).
          items: the item IDs shown.
          rng: the source of randomness; the same state gives the same reactions.
          drifted: act by the rotated affinities, ignoring the held-out ratings.
        """
        out: list[Reaction] = []
        for item in items:
            rating = None if drifted else self.rating(user, item)
            if rating is None:
                actions = self._by_affinity(user, item, rng, drifted)
            else:
                actions = actions_for_rating(rating)
            out.extend(Reaction(int(item), a) for a in actions)
        return out

    def _by_affinity(self, user: int, item: int, rng: np.random.Generator, drifted: bool) -> tuple[str, ...]:
        if rng.random() >= self.click_probability(user, item, drifted):
            return ()
        imagined = round(self.item_affinity(user, item, drifted) + rng.normal(0, IMAGINED_NOISE))
        return actions_for_rating(max(imagined, 3))

    # -- sessions ----------------------------------------------------------------------------
    def sessions(self, users: int | None = None) -> pd.DataFrame:
        """The held-out ratings as sessions (columns user, time in unix s), in time order.

        Args:
          users: keep only the first ``users`` distinct users to appear (None: all).
        """
        sessions = self.heldout[["user", "time"]]
        if users is not None:
            if users < 1:
                raise ValueError(f"users = {users}: expected at least 1 (or None for all)")
            chosen = pd.unique(sessions["user"])[:users]
            sessions = sessions[sessions["user"].isin(chosen)]
        return sessions.reset_index(drop=True)


def load_population(folder: str | Path | None, holdout: float = 0.2, **kwargs) -> Population:
    """The population of a MovieLens folder (see :class:`Population` for ``kwargs``).

    Raises:
      FileNotFoundError: no folder given, or it does not exist or holds no MovieLens ratings.
    """
    if folder is None:
        raise FileNotFoundError("no MovieLens folder to replay: pass --data <folder> or set simulator.data "
                                "(FLYWHEEL__SIMULATOR__DATA)")
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"MovieLens folder {path.resolve()} does not exist: pass --data <folder> "
                                "(e.g. ../shared/datasets/ml-100k) or fix simulator.data")
    return Population.from_movielens(load(path), holdout, **kwargs)
