"""Label upgrades: one impression, trained once per task.

The joiner emits a positive at the first action on a shown item, then another example each
time a later action adds a task (labels are cumulative: click, then click + like, then
click + like + finish), and a corrected positive when an action comes after the item went out
as a negative. Trained as they arrive, each would count as an impression of its own: the click
learned three times, like and finish first learned as 0.

:class:`LabelUpgrades` first coalesces a batch: the emissions of one key in the same batch
become one example with their labels combined (the latest emission, labels the maximum of
each task), so actions that reach the trainer together (a click, like and finish posted at
once, joined within one checkpoint) train as one impression with every label right. Then it
keeps the labels trained per (request_id, item_id) for the last ``capacity`` keys (least
recently seen dropped first; size it to the examples of one label window). An example
repeating a key of an earlier batch trains only the tasks whose label rose (the others get
weight 0 through ``sample_rates``) and is marked ``upgrade: True`` (not a new impression);
an exact repeat trains nothing. A ``provisional`` negative (pipelines/online/delayed.py) is
never merged into the positives of its key: it passes the batch as it is and its key's labels
start at 0, so the positives after it are upgrades. The 0 that a task upgraded
in a later batch learned first is not undone (that would take a negative weight, which the
weighted-mean loss cannot take): without coalescing, a like or finish always arriving with its
click would be learned as 0 then 1 and so pulled toward p = 0.5. The online trainer forgets
the keys on every rollback, so a replay from a snapshot trains what it replays.
"""

from __future__ import annotations

from collections import OrderedDict


class LabelUpgrades:
    """See the module docstring; ``apply`` filters a batch, ``forget`` clears the keys."""

    def __init__(self, capacity: int = 500_000):
        self.capacity = capacity
        self.trained: OrderedDict[tuple, dict[str, int]] = OrderedDict()

    def apply(self, examples: list[dict], tasks: list[str]) -> list[dict]:
        """The examples to train: the batch coalesced per key, upgrades of keys trained in
        earlier batches restricted to the tasks whose label rose."""
        out = []
        for e in self.coalesce(examples, tasks):
            if e.get("request_id") is None:  # not from the joiner (no impression key): as it is
                out.append(e)
                continue
            key = (e["request_id"], e.get("item_id"))
            labels = {t: int(bool(e.get("labels", {}).get(t, 0))) for t in tasks}
            before = self.trained.pop(key, None)
            self.trained[key] = {t: max(labels[t], (before or {}).get(t, 0)) for t in tasks}
            if before is None:
                out.append(e)
                continue
            risen = [t for t in tasks if labels[t] > before.get(t, 0)]
            if risen:
                rates = e.get("sample_rates") or {}
                kept = {t: (rates.get(t, e.get("sample_rate", 1.0)) if t in risen else 0.0) for t in tasks}
                out.append({**e, "sample_rates": kept, "upgrade": True})
        while len(self.trained) > self.capacity:
            self.trained.popitem(last=False)
        return out

    @staticmethod
    def coalesce(examples: list[dict], tasks: list[str]) -> list[dict]:
        """One example per (request_id, item_id) of the batch, at its last emission's place,
        with each task's label the maximum of its emissions'."""
        last: dict[tuple, int] = {}
        own: list[dict[str, int] | None] = []
        labels: dict[tuple, dict[str, int]] = {}
        for n, e in enumerate(examples):
            if e.get("request_id") is None or e.get("provisional"):
                own.append(None)
                continue
            key = (e["request_id"], e.get("item_id"))
            last[key] = n
            own.append({t: int(bool(e.get("labels", {}).get(t, 0))) for t in tasks})
            labels[key] = {t: max(own[n][t], labels.get(key, {}).get(t, 0)) for t in tasks}
        out = []
        for n, e in enumerate(examples):
            if own[n] is None:
                out.append(e)
                continue
            key = (e["request_id"], e.get("item_id"))
            if last[key] == n:
                out.append(e if labels[key] == own[n] else {**e, "labels": {**e.get("labels", {}), **labels[key]}})
        return out

    def forget(self) -> None:
        self.trained.clear()
