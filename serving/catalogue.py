"""What the model server knows about items and users besides embeddings: titles, item and
user attributes from a history folder read through the data contract (:func:`datasets.load`,
the same IDs the backfill and simulator use).

An item or user it does not know is served anyway (cold start): no attribute IDs, title
``item <id>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np


@dataclass
class Catalogue:
    titles: dict[int, str] = field(default_factory=dict)
    genres: dict[int, list[int]] = field(default_factory=dict)  # item -> attribute feature IDs (the genre slot)
    genre_names: dict[int, str] = field(default_factory=dict)  # attribute feature ID -> its token
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
        return [self.genre_names.get(g, str(g)) for g in self.genres.get(item, [])]

    @classmethod
    def load(cls, folder: str | Path | None, fmt: str = "auto", actions: dict[str, list[str]] | None = None) -> Catalogue:
        """From a history folder (a contract folder or one an adapter reads); an empty catalogue
        when ``folder`` is None.

        Raises:
          FileNotFoundError: the folder holds no history (says which files were expected).
          datasets.contract.ContractError: it breaks the data contract.
        """
        if not folder:
            return cls()
        from datasets import load

        data = load(folder, fmt, actions)
        return cls(data.titles, data.item_attrs, data.attr_names, data.user_attrs)
