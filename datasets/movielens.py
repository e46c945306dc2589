"""The MovieLens adapter: a MovieLens release onto the data contract (datasets/contract.py).

Two layouts are read:

- ml-100k: ``u.data`` (tab-separated ``user item rating unix_time``), ``u.item`` (``|``
  separated, title second, 19 genre flags at the end), ``u.user`` (``id|age|gender|occupation|zip``);
- ml-latest / ml-20m style: ``ratings.csv`` (``userId,movieId,rating,timestamp``) and
  ``movies.csv`` (``movieId,title,genres`` with ``|``-separated genres).

MovieLens records ratings, not impressions. Each rating becomes actions on the contract:
``click`` (every rating), ``like`` (rating >= 4) and ``finish`` (rating = 5), at the rating's
time, with no request ID; so the history has no impressions and negatives are sampled.
Attributes: ``genre=<name>`` per item; ``age=<decade>``, ``gender=`` and ``occupation=`` per user.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from datasets.contract import Tables, finish

GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
               "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
               "War", "Western"]


def is_movielens(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "u.data").exists() or (folder / "ratings.csv").exists()


def tables(folder: str | Path) -> Tables:
    """The contract tables of a MovieLens folder (either layout).

    Raises:
      FileNotFoundError: the folder holds neither layout (says which files were expected).
    """
    folder = Path(folder)
    if (folder / "u.data").exists():
        ratings = pd.read_csv(folder / "u.data", sep="\t", names=["user", "item", "rating", "time"])
        items, users = _items_100k(folder / "u.item"), _users_100k(folder / "u.user")
    elif (folder / "ratings.csv").exists():
        ratings = pd.read_csv(folder / "ratings.csv").rename(
            columns={"userId": "user", "movieId": "item", "timestamp": "time"})
        items, users = _items_csv(folder / "movies.csv"), pd.DataFrame({"user_id": [], "attributes": []})
    else:
        raise FileNotFoundError(f"{folder} holds neither u.data (ml-100k) nor ratings.csv (ml-latest/ml-20m): "
                                "pass the folder of a MovieLens release")
    known = set(items["item_id"].tolist())
    extra = sorted(set(ratings["item"].astype(int)) - known)  # rated items without a catalogue line
    items = pd.concat([items, pd.DataFrame({"item_id": extra, "attributes": "", "title": ""})], ignore_index=True)
    items["item_id"] = items["item_id"].astype(np.int64)
    users["user_id"] = users["user_id"].astype(np.int64)
    parts = []
    for action, keep in (("click", ratings["rating"] > -np.inf), ("like", ratings["rating"] >= 4),
                         ("finish", ratings["rating"] >= 5)):
        chosen = ratings[keep]
        parts.append(pd.DataFrame({"user_id": chosen["user"].astype(np.int64), "item_id": chosen["item"].astype(np.int64),
                                   "action": action, "timestamp": chosen["time"].astype(np.int64)}))
    return finish(Tables(items, users, pd.concat(parts, ignore_index=True)))


def _items_100k(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame({"item_id": [], "attributes": [], "title": []})
    raw = pd.read_csv(path, sep="|", header=None, encoding="latin-1")
    flags = raw.iloc[:, -19:].to_numpy()
    attributes = ["|".join(f"genre={GENRES_100K[g]}" for g in np.flatnonzero(f)) for f in flags]
    return pd.DataFrame({"item_id": raw[0].astype(np.int64), "attributes": attributes, "title": raw[1].astype(str)})


def _items_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame({"item_id": [], "attributes": [], "title": []})
    movies = pd.read_csv(path)
    attributes = ["|".join(f"genre={g}" for g in str(gs).split("|")) for gs in movies["genres"]]
    return pd.DataFrame({"item_id": movies["movieId"].astype(np.int64), "attributes": attributes,
                         "title": movies["title"].astype(str)})


def _users_100k(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame({"user_id": [], "attributes": []})
    users = pd.read_csv(path, sep="|", names=["user", "age", "gender", "occupation", "zip"])
    attributes = [f"age={min(int(a) // 10, 9) * 10}s|gender={g}|occupation={o}"
                  for a, g, o in zip(users["age"], users["gender"], users["occupation"])]
    return pd.DataFrame({"user_id": users["user"].astype(np.int64), "attributes": attributes})
