"""A seeded synthetic world in the data contract's shape: the default data offline (CI, no network).

Unlike MovieLens it holds what a live recommender logs: impressions with their request and
position (real negatives), explicit skips, tastes that drift and actions uploaded late. The
same arguments (and ``seed``) give identical tables.

The world:
  Users: ``users`` of them, IDs 1..users. Each has a latent taste, a unit vector of ``dim``
    components near the centroid of a favourite category, and attributes correlated with it:
    ``age=<bucket>|gender=<f|m>|region=<name>`` (gender and age are noisy projections of the
    taste, region follows the favourite category 70% of the time).
  Items: ``items`` of them, IDs 1..items in order of arrival. Each has a category of
    :data:`CATEGORIES` and a unit latent vector close to that category's centroid (so the
    category is informative), a brand of its category, a heavy-tailed popularity (Pareto,
    exponent 1.2, times a brand effect), ``attributes`` ``category=<name>|brand=<bNN>``, a
    ``title`` and ``first_seen`` (unix s): a share :data:`ARRIVED` exists at ``start``, the
    rest arrive uniformly over the ``days``.
  Sessions: about ``sessions_per_user`` per user (Poisson, with a gamma-distributed activity of
    mean 1 per user), at uniform random times (unix s) over ``days``. Each is one request
    (``request_id`` unique in the world) showing ``feed`` items in positions 0..feed-1, drawn
    without replacement among the items arrived by then with weight
    ``popularity * exp(EXPOSURE * affinity)``: exposure biased by popularity and taste, as a
    recommender's would be. Each shown item is an ``impression`` row at the session's time.
  Actions: affinity is ``<taste at that time, item vector>`` (in [-1, 1]);
    ``p(click) = sigmoid(b + AFFINITY * affinity + 0.5 * popularity z-score - POSITION * position)``
    with ``b`` calibrated so the click-through (clicks / impressions) is :data:`CTR`. Given a
    click, ``like`` and ``finish`` have probabilities rising with affinity, and a like is
    shared 10% of the time; an unclicked item is ``skip``-ped with a probability falling with
    affinity. Action rows carry their impression's ``request_id`` and ``position``; a click
    comes seconds after the impression, a like or finish a minute or minutes after the click.
  Drift: a user's taste moves from ``taste0`` towards a second taste (near another category)
    linearly in time, reaching ``drift`` of the way at the end of ``days`` (renormalised), so
    late behaviour differs from early behaviour.
  Late actions: ``late_share`` of the impressions with actions have all their action rows
    delayed by a uniform ``late_days / 3`` .. ``late_days`` days (a mobile app uploading when
    it next comes online); every other action lands within minutes.

Defaults: about 600 users, 1,000 items and 90k interaction rows (72k impressions), built in
well under a second.

Example::

    from datasets.synthetic import world, write_world
    tables = world(users=100, items=200, days=7, seed=1)  # datasets.contract.Tables
    write_world("/tmp/synthetic-world", fmt="csv", seed=1)  # a contract folder
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datasets.contract import Tables, finish, write

DAY = 86_400  # seconds
CATEGORIES = ("news", "sports", "music", "comedy", "food", "travel", "tech", "fashion", "gaming", "pets",
              "science", "cars")
BRANDS_PER_CATEGORY = 4
AGES = ("18-24", "25-34", "35-44", "45-54", "55+")
REGIONS = ("north", "south", "east", "west")
ARRIVED = 0.5  # share of items that exist at start (at least a feed's worth)
CTR = 0.10  # overall click-through (clicks / impressions) the click intercept is calibrated to
AFFINITY = 3.0  # click logit per unit of affinity
EXPOSURE = 4.0  # feed log-weight per unit of affinity (log popularity counts 1)
POSITION = 0.05  # click logit lost per slot down the feed
SPREAD = 0.6  # norm of the noise around a category centroid (centroids are unit vectors)
CHUNK = 2048  # sessions scored at once (memory: CHUNK x items floats)


@dataclass
class Latent:
    """The world's hidden state, for tests and experiments (row n: user or item ID n + 1)."""

    taste0: np.ndarray  # users x dim, unit rows: each user's taste at start
    taste1: np.ndarray  # users x dim, unit rows: the taste drift heads to
    vectors: np.ndarray  # items x dim, unit rows
    popularity: np.ndarray  # items: log popularity
    start: int  # unix s
    span: int  # seconds
    drift: float

    def taste(self, user_id, timestamp) -> np.ndarray:
        """Tastes (rows) of users (IDs) at unix times, drift included."""
        w = self.drift * np.clip((np.asarray(timestamp) - self.start) / self.span, 0, 1)[:, None]
        u = np.asarray(user_id) - 1
        return _unit((1 - w) * self.taste0[u] + w * self.taste1[u])

    def affinity(self, user_id, item_id, timestamp) -> np.ndarray:
        """``<taste at timestamp, item vector>`` per (user ID, item ID, unix s), in [-1, 1]."""
        return np.einsum("nd,nd->n", self.taste(user_id, timestamp), self.vectors[np.asarray(item_id) - 1])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _intercept(logit: np.ndarray, target: float) -> float:
    """The shift b with mean(sigmoid(logit + b)) = target (bisection)."""
    lo, hi = -40.0, 40.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _sigmoid(logit + mid).mean() < target else (lo, mid)
    return (lo + hi) / 2


def world(users: int = 600, items: int = 1000, days: float = 30, sessions_per_user: float = 12, feed: int = 10,
          dim: int = 8, drift: float = 0.5, late_share: float = 0.05, late_days: float = 3,
          start: int = 1_700_000_000, seed: int = 0) -> Tables:
    """The world's contract tables (see the module docstring; :func:`simulate` for the arguments)."""
    return simulate(users, items, days, sessions_per_user, feed, dim, drift, late_share, late_days, start, seed)[0]


def simulate(users: int = 600, items: int = 1000, days: float = 30, sessions_per_user: float = 12, feed: int = 10,
             dim: int = 8, drift: float = 0.5, late_share: float = 0.05, late_days: float = 3,
             start: int = 1_700_000_000, seed: int = 0) -> tuple[Tables, Latent]:
    """The world's contract tables (as :func:`datasets.contract.finish` leaves them) and its :class:`Latent`.

    Args:
      users: users (IDs 1..users).
      items: items (IDs 1..items, in order of arrival).
      days: the period sessions fall in, in days from ``start``.
      sessions_per_user: mean sessions (requests) per user over the period.
      feed: items shown per session (positions 0..feed-1; at most ``items``).
      dim: components of the latent tastes and item vectors.
      drift: how far each taste has moved towards its second taste at the period's end (0: none, 1: all).
      late_share: share of impressions with actions whose actions are uploaded late (0..1).
      late_days: the longest delay of a late action, in days (the shortest: a third of it).
      start: the period's start, unix seconds.
      seed: the random seed; the same arguments give identical tables.
    """
    if min(users, items, feed, dim) < 1 or days <= 0 or sessions_per_user < 0 or not 0 <= late_share <= 1:
        raise ValueError("world: users, items, feed, dim >= 1; days > 0; sessions_per_user >= 0; 0 <= late_share <= 1")
    rng = np.random.default_rng(seed)
    span, feed, k = max(int(days * DAY), 2), min(feed, items), len(CATEGORIES)
    centroids = _unit(rng.standard_normal((k, dim)))
    noise = SPREAD / np.sqrt(dim)

    category = rng.integers(0, k, items)
    brand = category * BRANDS_PER_CATEGORY + rng.integers(0, BRANDS_PER_CATEGORY, items)
    vectors = _unit(centroids[category] + noise * rng.standard_normal((items, dim)))
    popularity = np.log1p(rng.pareto(1.2, items)) + 0.3 * rng.standard_normal(k * BRANDS_PER_CATEGORY)[brand]
    first_seen = np.full(items, start, np.int64)
    arrived = max(feed, int(round(items * ARRIVED)))
    first_seen[arrived:] = start + 1 + np.sort(rng.integers(0, span - 1, items - arrived))

    favourite = rng.integers(0, k, users)
    taste0 = _unit(centroids[favourite] + noise * rng.standard_normal((users, dim)))
    later = (favourite + rng.integers(1, k, users)) % k  # another category
    taste1 = _unit(centroids[later] + noise * rng.standard_normal((users, dim)))
    axes = _unit(rng.standard_normal((2, dim)))
    gender = (taste0 @ axes[0] + 0.3 * rng.standard_normal(users) > 0).astype(int)
    age_score = taste0 @ axes[1] + 0.3 * rng.standard_normal(users)
    age = np.searchsorted(np.quantile(age_score, [0.2, 0.4, 0.6, 0.8]), age_score)
    region = np.where(rng.random(users) < 0.7, favourite % len(REGIONS), rng.integers(0, len(REGIONS), users))
    latent = Latent(taste0, taste1, vectors, popularity, start, span, drift)

    per_user = rng.poisson(sessions_per_user * rng.gamma(2.0, 0.5, users))
    s_user = np.repeat(np.arange(users), per_user)
    s_time = np.sort(start + rng.integers(0, span, len(s_user)))  # request IDs in time order
    s_user = rng.permutation(s_user)
    sessions = len(s_user)
    s_taste = latent.taste(s_user + 1, s_time)
    shown = np.empty((sessions, feed), np.int64)
    for lo in range(0, sessions, CHUNK):
        hi = min(lo + CHUNK, sessions)
        score = popularity + EXPOSURE * s_taste[lo:hi] @ vectors.T + rng.gumbel(size=(hi - lo, items))
        score[first_seen[None, :] > s_time[lo:hi, None]] = -np.inf  # not arrived yet
        top = np.argpartition(-score, feed - 1, axis=1)[:, :feed]  # Gumbel top-k: weighted, no replacement
        order = np.argsort(-np.take_along_axis(score, top, 1), axis=1, kind="stable")
        shown[lo:hi] = np.take_along_axis(top, order, 1)

    n = sessions * feed
    session = np.repeat(np.arange(sessions), feed)
    user, item, position, shown_at = s_user[session], shown.ravel(), np.tile(np.arange(feed), sessions), s_time[session]
    aff = np.einsum("nd,nd->n", s_taste[session], vectors[item])
    z_pop = (popularity - popularity.mean()) / max(popularity.std(), 1e-12)
    logit = AFFINITY * aff + 0.5 * z_pop[item] - POSITION * position
    click = rng.random(n) < _sigmoid(logit + _intercept(logit, CTR) if n else logit)
    like = click & (rng.random(n) < _sigmoid(-2.0 + 3.0 * aff))
    done = click & (rng.random(n) < _sigmoid(-2.0 + 3.0 * aff + 0.3 * z_pop[item]))
    share = like & (rng.random(n) < 0.1)
    skip = ~click & (rng.random(n) < _sigmoid(-1.5 - 2.0 * aff))
    late = (click | skip) & (rng.random(n) < late_share)
    delay = np.where(late, rng.uniform(late_days / 3, late_days, n) * DAY, 0.0)
    clicked_at = shown_at + delay + 1 + 2 * position + rng.exponential(10, n)
    liked_at = clicked_at + 1 + rng.exponential(45, n)
    parts = [("impression", np.ones(n, bool), shown_at), ("click", click, clicked_at), ("like", like, liked_at),
             ("finish", done, clicked_at + 5 + rng.exponential(180, n)),
             ("share", share, liked_at + 1 + rng.exponential(30, n)),
             ("skip", skip, shown_at + delay + 1 + position + rng.exponential(3, n))]
    rows = [np.flatnonzero(mask) for _, mask, _ in parts]
    at = np.concatenate(rows)
    request = np.array([f"{seed}-{s:06d}" for s in range(sessions)], dtype=object)
    interactions = pd.DataFrame({
        "user_id": (user[at] + 1).astype(np.int64), "item_id": (item[at] + 1).astype(np.int64),
        "action": np.repeat(np.array([name for name, _, _ in parts], dtype=object), [len(r) for r in rows]),
        "timestamp": np.floor(np.concatenate([t[r] for (_, _, t), r in zip(parts, rows)])).astype(np.int64),
        "request_id": request[session[at]], "position": position[at].astype(np.int64)})

    ids = np.arange(1, items + 1)
    cat_names = np.array(CATEGORIES, dtype=object)[category]
    brands = [f"b{b:02d}" for b in brand]
    items_frame = pd.DataFrame({
        "item_id": ids.astype(np.int64),
        "attributes": [f"category={c}|brand={b}" for c, b in zip(cat_names, brands)],
        "first_seen": first_seen, "title": [f"{c.title()} #{i} by {b}" for c, i, b in zip(cat_names, ids, brands)]})
    users_frame = pd.DataFrame({
        "user_id": np.arange(1, users + 1, dtype=np.int64),
        "attributes": [f"age={AGES[a]}|gender={'fm'[g]}|region={REGIONS[r]}" for a, g, r in zip(age, gender, region)]})
    return finish(Tables(items_frame, users_frame, interactions)), latent


def write_world(folder: str | Path, fmt: str = "parquet", **kwargs) -> Path:
    """Write :func:`world` (``kwargs``: its arguments) as a contract folder (``fmt``: parquet or csv); returns it."""
    return write(world(**kwargs), folder, fmt)
