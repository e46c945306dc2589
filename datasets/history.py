"""A checked history as the components use it: events with task labels, feature IDs, examples.

:class:`Dataset` is what the backfill, the retrain's catalogue, the simulator and the
experiments read, whatever the source (a contract folder or an adapter onto it):

- ``events``: one row per ``(user, item, request)`` in time order, columns ``user``, ``item``,
  ``time`` (unix s, the first action's), ``request``, ``position`` and one 0/1 column per task
  of ``streaming.schemas.TASKS`` (the max over the actions, through ``data.actions``). A row
  with every task 0 is an impression that got no positive action.
- Feature IDs of attributes are stable hashes of ``items:<token>`` / ``users:<token>`` in the
  ``attr`` table's space, so a new attribute never moves an old one's ID between days.

Examples (:func:`examples`) follow streaming/schemas.py's ``Example``. When the history holds
impressions, the negatives are the impressions without a positive action (what the joiner
does live); otherwise ``negatives`` items the user never engaged with are drawn per positive
(the usual stand-in, e.g. for MovieLens).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from datasets.contract import Tables, known_actions
from streaming.schemas import TASKS

ATTR_SPACE = 2**62  # attribute feature IDs live in [0, 2**62) of the attr table


def attr_id(kind: str, token: str) -> int:
    """The feature ID of one attribute token of an item or user (``kind``: items or users)."""
    digest = hashlib.blake2b(f"{kind}:{token}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % ATTR_SPACE


def tokens(attributes: str) -> list[str]:
    return [t.strip() for t in str(attributes).split("|") if t.strip()]


@dataclass
class Dataset:
    """A history ready for the components (see the module docstring)."""

    events: pd.DataFrame
    item_attrs: dict[int, list[int]] = field(default_factory=dict)  # item -> attribute feature IDs
    user_attrs: dict[int, list[int]] = field(default_factory=dict)  # user -> attribute feature IDs
    titles: dict[int, str] = field(default_factory=dict)
    attr_names: dict[int, str] = field(default_factory=dict)  # attribute feature ID -> its token
    first_seen: dict[int, int] = field(default_factory=dict)  # item -> unix s
    catalogue: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def items(self) -> np.ndarray:
        """Every item of the catalogue, sorted."""
        return self.catalogue

    @cached_property
    def has_impressions(self) -> bool:
        """True when some shown item got no positive action: real negatives exist."""
        return bool((~engaged(self.events)).any())

    @property
    def engaged(self) -> pd.DataFrame:
        """The events with a positive action for some task."""
        return self.events[engaged(self.events)]


def engaged(events: pd.DataFrame) -> pd.Series:
    return events[list(TASKS)].to_numpy().any(axis=1) if len(events) else np.zeros(0, bool)


def level(events: pd.DataFrame) -> np.ndarray:
    """How far each event went, 0..3: skip or impression, click, like, finish (each implies the ones before)."""
    lv = np.zeros(len(events), np.int64)
    for n, task in enumerate(("click", "like", "finish"), start=1):
        lv = np.where(events[task].to_numpy() > 0, n, lv)
    return lv


def from_tables(tables: Tables, actions: dict[str, list[str]] | None = None) -> Dataset:
    """The :class:`Dataset` of checked contract tables (``actions``: ``data.actions``)."""
    actions = known_actions(actions)
    raw = tables.interactions
    request = raw["request_id"].where(raw["request_id"] != "", raw["user_id"].astype(str) + "@" + raw["timestamp"].astype(str))
    frame = pd.DataFrame({"user": raw["user_id"].to_numpy(), "item": raw["item_id"].to_numpy(),
                          "time": raw["timestamp"].to_numpy(), "request": request.to_numpy(),
                          "position": raw["position"].to_numpy()})
    for task in TASKS:
        positive = [a for a, ts in actions.items() if task in ts]
        frame[task] = raw["action"].isin(positive).to_numpy().astype(np.int64)
    agg = {"time": "min", "position": "first", **{t: "max" for t in TASKS}}
    events = frame.groupby(["user", "item", "request"], sort=False, as_index=False).agg(agg)
    events = events.sort_values("time", kind="stable").reset_index(drop=True)
    events = events[["user", "item", "time", "request", "position", *TASKS]]
    names: dict[int, str] = {}

    def attrs(frame: pd.DataFrame, key: str, kind: str) -> dict[int, list[int]]:
        out = {}
        for k, text in zip(frame[key].tolist(), frame["attributes"].tolist()):
            ids = []
            for token in tokens(text):
                ids.append(attr_id(kind, token))
                names[ids[-1]] = token
            out[int(k)] = ids
        return out

    items = tables.items
    return Dataset(events, attrs(items, "item_id", "items"), attrs(tables.users, "user_id", "users"),
                   {int(i): t for i, t in zip(items["item_id"], items["title"]) if t},
                   names, dict(zip(items["item_id"].astype(int), items["first_seen"].astype(int))),
                   np.sort(items["item_id"].to_numpy(np.int64)))


def time_split(events: pd.DataFrame, test_fraction: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Everything up to a global time cutoff trains, the rest tests (no peeking ahead)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction {test_fraction}: expected 0 < f < 1")
    cutoff = events["time"].quantile(1 - test_fraction)
    return events[events["time"] <= cutoff], events[events["time"] > cutoff]


def examples(data: Dataset, events: pd.DataFrame, negatives: int = 4, sample_rate: float = 1.0,
             history: int = 10, seed: int = 0, prior: pd.DataFrame | None = None) -> list[dict]:
    """Example dicts for ``events`` (time order).

    Args:
      negatives: without impressions in the history, items drawn per positive among those the
        user has not engaged with (labels all 0); with impressions, unused (they are the negatives).
      sample_rate: written on the negatives (1.0: they stand for themselves).
      history: the user's latest engaged items before the example, as the ``history`` slot.
      prior: events before ``events`` (e.g. the training split for the test split), seeding
        each user's history.
    """
    rng = np.random.default_rng(seed)
    items, real = data.items, data.has_impressions
    seen: dict[int, list[int]] = {}
    if prior is not None:
        mask = engaged(prior)
        for u, i in zip(prior["user"][mask], prior["item"][mask]):
            seen.setdefault(int(u), []).append(int(i))
    labels = events[list(TASKS)].to_numpy()
    out = []
    columns = zip(events["user"], events["item"], events["time"], events["request"], events["position"], labels)
    for u, i, t, request, position, row in columns:
        u, i = int(u), int(i)
        past = seen.setdefault(u, [])
        base = {"user_id": u, "event_time": int(t) * 1000, "position": int(position), "dense": {},
                "request_id": str(request)}
        sparse = {"user": [u], "history": past[-history:], "user_attr": data.user_attrs.get(u, [])}
        label = {task: int(v) for task, v in zip(TASKS, row)}
        positive = any(label.values())
        out.append({**base, "item_id": i, "sparse": {**sparse, "item": [i], "genre": data.item_attrs.get(i, [])},
                    "labels": label, "sample_rate": 1.0 if positive else sample_rate})
        if not positive:
            continue
        if not real:
            rated = set(past)
            drawn = (int(j) for j in rng.choice(items, size=negatives * 3, replace=True))
            for j in [j for j in dict.fromkeys(drawn) if j not in rated and j != i][:negatives]:
                out.append({**base, "item_id": j, "sparse": {**sparse, "item": [j], "genre": data.item_attrs.get(j, [])},
                            "labels": dict.fromkeys(TASKS, 0), "sample_rate": sample_rate})
        past.append(i)
    return out
