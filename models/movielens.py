"""MovieLens-format data: ratings, item genres, user attributes; time-ordered splits; examples.

Two layouts are read (the product takes a path; no dataset ships with it):

- ml-100k: ``u.data`` (tab-separated ``user item rating unix_time``), ``u.item`` (``|``
  separated, 19 genre flags at the end), ``u.user`` (``id|age|gender|occupation|zip``);
- ml-latest / ml-20m style: ``ratings.csv`` (``userId,movieId,rating,timestamp`` with a
  header) and ``movies.csv`` (``movieId,title,genres`` with ``|``-separated genres).

Examples (:func:`examples`) follow the ``Example`` schema of streaming/schemas.py: a rating is
a click; ``like`` = rating >= 4; ``finish`` = rating = 5; for each rating, ``negatives``
items the user has not rated are drawn as shown-but-not-clicked impressions, kept with
``sample_rate`` (MovieLens has no impressions: this is the usual stand-in, say so in results).

Feature IDs are namespaced per slot (``slot_base + raw id``) so tables may be shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

GENRE_BASE = 1_000_000  # genre feature IDs: GENRE_BASE + genre index
ATTR_BASE = 2_000_000  # user attributes (age bucket, gender, occupation): ATTR_BASE + code


@dataclass
class MovieLens:
    """ratings: user, item, rating, time (unix s), sorted by time; genres: item -> [genre ids];
    users: user -> [attribute ids] (empty when the layout has none)."""

    ratings: pd.DataFrame
    genres: dict[int, list[int]]
    users: dict[int, list[int]]

    @property
    def items(self) -> np.ndarray:
        return np.sort(self.ratings["item"].unique())


def load(path: str | Path) -> MovieLens:
    """Read a MovieLens folder (either layout). Raises FileNotFoundError naming what is missing."""
    path = Path(path)
    if (path / "u.data").exists():
        ratings = pd.read_csv(path / "u.data", sep="\t", names=["user", "item", "rating", "time"])
        genres, users = _genres_100k(path / "u.item"), _users_100k(path / "u.user")
    elif (path / "ratings.csv").exists():
        ratings = pd.read_csv(path / "ratings.csv").rename(
            columns={"userId": "user", "movieId": "item", "timestamp": "time"})
        genres, users = _genres_csv(path / "movies.csv"), {}
    else:
        raise FileNotFoundError(f"{path} holds neither u.data (ml-100k) nor ratings.csv (ml-latest/ml-20m): "
                                "pass the folder of a MovieLens release")
    ratings = ratings[["user", "item", "rating", "time"]].sort_values("time", kind="stable").reset_index(drop=True)
    return MovieLens(ratings, genres, users)


def _genres_100k(path: Path) -> dict[int, list[int]]:
    if not path.exists():
        return {}
    items = pd.read_csv(path, sep="|", header=None, encoding="latin-1")
    flags = items.iloc[:, -19:].to_numpy()
    return {int(i): [GENRE_BASE + int(g) for g in np.flatnonzero(f)] for i, f in zip(items[0], flags)}


def _genres_csv(path: Path) -> dict[int, list[int]]:
    if not path.exists():
        return {}
    movies = pd.read_csv(path)
    names: dict[str, int] = {}
    return {int(m): [GENRE_BASE + names.setdefault(g, len(names)) for g in str(gs).split("|")]
            for m, gs in zip(movies["movieId"], movies["genres"])}


def _users_100k(path: Path) -> dict[int, list[int]]:
    if not path.exists():
        return {}
    users = pd.read_csv(path, sep="|", names=["user", "age", "gender", "occupation", "zip"])
    occupations = {o: i for i, o in enumerate(sorted(users["occupation"].unique()))}
    return {int(u): [ATTR_BASE + min(int(a) // 10, 9), ATTR_BASE + 10 + int(g == "F"), ATTR_BASE + 20 + occupations[o]]
            for u, a, g, o in zip(users["user"], users["age"], users["gender"], users["occupation"])}


def time_split(ratings: pd.DataFrame, test_fraction: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Everything before a global time cutoff trains, the rest tests (no peeking ahead)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction {test_fraction}: expected 0 < f < 1")
    cutoff = ratings["time"].quantile(1 - test_fraction)
    return ratings[ratings["time"] <= cutoff], ratings[ratings["time"] > cutoff]


def examples(data: MovieLens, ratings: pd.DataFrame, negatives: int = 4, sample_rate: float = 1.0,
             history: int = 10, seed: int = 0, prior: pd.DataFrame | None = None) -> list[dict]:
    """Example dicts for ``ratings`` (time order), each with ``negatives`` unrated items.

    Args:
      negatives: sampled unrated items per rating (labels all 0).
      sample_rate: written on the negatives (1.0: they stand for themselves).
      history: the user's latest rated items before the example, as the ``history`` slot.
      prior: ratings that happened before ``ratings`` (e.g. the training split for the test
        split), seeding each user's history.
    """
    rng = np.random.default_rng(seed)
    items = data.items
    seen: dict[int, list[int]] = {}
    for u, i in (zip(prior["user"], prior["item"]) if prior is not None else ()):
        seen.setdefault(int(u), []).append(int(i))
    out = []
    for u, i, r, t in zip(ratings["user"], ratings["item"], ratings["rating"], ratings["time"]):
        u, i = int(u), int(i)
        past = seen.setdefault(u, [])
        rated = set(past)
        base = {"user_id": u, "event_time": int(t) * 1000, "position": 0, "dense": {},
                "request_id": f"ml-{u}-{t}"}
        sparse = {"user": [u], "history": past[-history:], "user_attr": data.users.get(u, [])}
        out.append({**base, "item_id": i, "sparse": {**sparse, "item": [i], "genre": data.genres.get(i, [])},
                    "labels": {"click": 1, "like": int(r >= 4), "finish": int(r >= 5)}, "sample_rate": 1.0})
        drawn = (int(j) for j in rng.choice(items, size=negatives * 3, replace=True))
        unrated = [j for j in dict.fromkeys(drawn) if j not in rated and j != i][:negatives]
        for j in unrated:
            out.append({**base, "item_id": j, "sparse": {**sparse, "item": [j], "genre": data.genres.get(j, [])},
                        "labels": {"click": 0, "like": 0, "finish": 0}, "sample_rate": sample_rate})
        past.append(i)
    return out
