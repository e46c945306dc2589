"""Label upgrades: one impression, trained once per task.

The joiner emits a positive at the first action on a shown item, then another example each
time a later action adds a task (labels are cumulative: click, then click + like, then
click + like + finish), and a corrected positive when an action comes after the item went out
as a negative. Trained as they arrive, each would count as an impression of its own: the click
learned three times, like and finish first learned as 0.

:class:`LabelUpgrades` keeps the labels trained per (request_id, item_id) for the last
``capacity`` keys (least recently seen dropped first; size it to the examples of one label
window). An example repeating a key trains only the tasks whose label rose (the others get
weight 0 through ``sample_rates``); an exact repeat trains nothing. The 0 an upgraded task
learned first is not undone (that would take a negative weight, which the weighted-mean loss
cannot take). The online trainer forgets the keys on every rollback, so a replay from a
snapshot trains what it replays.
"""

from __future__ import annotations

from collections import OrderedDict


class LabelUpgrades:
    """See the module docstring; ``apply`` filters a batch, ``forget`` clears the keys."""

    def __init__(self, capacity: int = 500_000):
        self.capacity = capacity
        self.trained: OrderedDict[tuple, dict[str, int]] = OrderedDict()

    def apply(self, examples: list[dict], tasks: list[str]) -> list[dict]:
        """The examples to train, upgrades restricted to the tasks whose label rose."""
        out = []
        for e in examples:
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
                out.append({**e, "sample_rates": kept})
        while len(self.trained) > self.capacity:
            self.trained.popitem(last=False)
        return out

    def forget(self) -> None:
        self.trained.clear()
