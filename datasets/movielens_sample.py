"""A synthetic MovieLens-format dataset (ml-100k layout) with learnable taste: each user likes
one or two genres and rates those items high, others low. Tests and demos generate their own
data with it; nothing is downloaded.

Example::

    from datasets.movielens_sample import write_movielens
    write_movielens("/tmp/ml-synth", users=200, items=120, ratings_per_user=30, days=10)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENRES = 19  # ml-100k's genre columns


def write_movielens(folder: str | Path, users: int = 200, items: int = 120, ratings_per_user: int = 30,
                    days: float = 10, start: int = 880_000_000, seed: int = 0, preference: float = 0.8) -> Path:
    """Write ``u.data``, ``u.item`` and ``u.user`` to ``folder``; returns it.

    Ratings are spread uniformly over ``days`` days from ``start`` (unix s). Items have one
    genre each, of the first 6, and a popularity (Zipf, exponent 1); a user likes one or two
    genres, picks items of them with probability ``preference`` (else any item), popular ones
    more often, and rates liked-genre items 4-5 (others 1-3).
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    item_genre = rng.integers(0, 6, size=items)
    popularity = 1.0 / rng.permutation(np.arange(1, items + 1))
    titles = [f"Movie {i} (1997)" for i in range(1, items + 1)]
    flags = ["|".join("1" if g == item_genre[i] else "0" for g in range(GENRES)) for i in range(items)]
    (folder / "u.item").write_text("".join(f"{i + 1}|{titles[i]}|01-Jan-1997||http://example.invalid/|{flags[i]}\n"
                                           for i in range(items)), encoding="latin-1")
    (folder / "u.user").write_text("".join(f"{u}|{20 + u % 40}|{'MF'[u % 2]}|other|00000\n"
                                           for u in range(1, users + 1)))
    lines = []
    for u in range(1, users + 1):
        liked = set(rng.choice(6, size=rng.integers(1, 3), replace=False).tolist())
        weights = np.where(np.isin(item_genre, list(liked)), preference / max(np.isin(item_genre, list(liked)).sum(), 1),
                           (1 - preference) / items)
        weights = weights * popularity
        chosen = rng.choice(items, size=min(ratings_per_user, items), replace=False, p=weights / weights.sum())
        times = np.sort(rng.integers(start, start + int(days * 86400), size=len(chosen)))
        for i, t in zip(chosen, times):
            rating = int(rng.integers(4, 6)) if item_genre[i] in liked else int(rng.integers(1, 4))
            lines.append(f"{u}\t{i + 1}\t{rating}\t{t}\n")
    (folder / "u.data").write_text("".join(lines))
    return folder
