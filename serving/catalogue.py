"""What the model server knows about items and users besides embeddings: titles, genres and
user attributes from a MovieLens-format folder (the same IDs the backfill and simulator use).

An item or user it does not know is served anyway (cold start): no genre or attribute IDs,
title ``item <id>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from models.movielens import GENRE_BASE, MovieLens, load

GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
               "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
               "War", "Western"]


@dataclass
class Catalogue:
    titles: dict[int, str] = field(default_factory=dict)
    genres: dict[int, list[int]] = field(default_factory=dict)  # item -> genre feature IDs
    genre_names: dict[int, str] = field(default_factory=dict)  # genre feature ID -> name
    users: dict[int, list[int]] = field(default_factory=dict)  # user -> attribute feature IDs

    def title(self, item: int) -> str:
        return self.titles.get(item, f"item {item}")

    @cached_property
    def _genre_arrays(self) -> dict[int, np.ndarray]:
        return {item: np.asarray(ids, np.uint64) for item, ids in self.genres.items()}

    def genre_columns(self, items: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The ``items``' genre IDs as one column (IDs, flat; the index into ``items`` of each),
        what :meth:`models.ranking.RankingTrainer.score_columns` takes."""
        arrays = self._genre_arrays
        empty = np.empty(0, np.uint64)
        parts = [arrays.get(i, empty) for i in items]
        if not parts:
            return empty, np.empty(0, np.int32)
        lengths = np.fromiter((len(p) for p in parts), np.int32, len(parts))
        return np.concatenate(parts), np.repeat(np.arange(len(parts), dtype=np.int32), lengths)

    def genre_labels(self, item: int) -> list[str]:
        return [self.genre_names.get(g, str(g - GENRE_BASE)) for g in self.genres.get(item, [])]

    @classmethod
    def load(cls, folder: str | Path | None) -> Catalogue:
        """From a MovieLens folder (either layout); an empty catalogue when ``folder`` is None.

        Raises:
          FileNotFoundError: the folder holds no MovieLens files (says which were expected).
        """
        if not folder:
            return cls()
        folder = Path(folder)
        data: MovieLens = load(folder)
        if (folder / "u.item").exists():
            items = pd.read_csv(folder / "u.item", sep="|", header=None, encoding="latin-1", usecols=[0, 1])
            titles = dict(zip(items[0].astype(int), items[1].astype(str)))
            names = {GENRE_BASE + i: n for i, n in enumerate(GENRES_100K)}
        else:
            movies = pd.read_csv(folder / "movies.csv")
            titles = dict(zip(movies["movieId"].astype(int), movies["title"].astype(str)))
            order: dict[str, int] = {}
            for gs in movies["genres"]:
                for g in str(gs).split("|"):
                    order.setdefault(g, len(order))
            names = {GENRE_BASE + i: n for n, i in order.items()}
        return cls(titles, data.genres, names, data.users)
