"""Each serving arm's rates, measured from the joined examples the online trainer consumes
(the arm is read off their ``model_version``: streaming.schemas.arm_of).

Per arm and task: impressions are the examples seen the first time, each weighted by the
inverse of its sample rate (a kept negative stands for the ones sampled away); positives are
the weighted labels, including the label upgrades of impressions seen earlier (a like after
the click), so a task's rate is ``positives / impressions``. The 95% interval is Wilson's on
the effective sample size ``(sum w)^2 / sum w^2`` of the weights.

Rates count from the trainer's start (one A/B readout per run); an impression replayed after
a rollback is recognised by its (request, item) key and not counted again.

Labels arrive late. With the joiner's provisional negatives (``online.delayed_feedback: fnw``)
an impression is counted when it is served (its provisional negative) and its positives as
they come, so a rate reads low by the actions still to come (most come within seconds).
Without them (``wait``) the impressions are the joiner's final examples: until the label window
has closed for the first impressions only positives have arrived and every rate reads high.
Either way the arms are compared on the same footing.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from models.mmoe import task_weights
from pipelines.online.upgrades import LabelUpgrades
from streaming.schemas import arm_of

Z95 = 1.959964


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson's interval of a proportion ``p`` over ``n`` (effective) trials; (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


class ArmRates:
    """Running per-arm, per-task sums (see the module docstring).

    It keeps its own :class:`LabelUpgrades` (never forgotten on a rollback, unlike the
    learner's), so examples the trainer replays after a recovery are not counted twice."""

    def __init__(self, capacity: int = 500_000, provisional_impressions: bool = False):
        self.provisional_impressions = provisional_impressions  # impressions = provisional negatives
        self._sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0, 0.0]))
        self._counted = LabelUpgrades(capacity)

    def add(self, examples: list[dict], tasks: list[str]) -> None:
        """Count a batch of joined examples as they come off the topic."""
        examples = self._counted.apply(examples, tasks)  # upgrades carry ``upgrade: True``; repeats are gone
        if not examples:
            return
        weights = task_weights(examples, tasks)
        for n, e in enumerate(examples):
            arm = self._sums[arm_of(e.get("model_version"))]
            impression = bool(e.get("provisional")) if self.provisional_impressions else not e.get("upgrade")
            for t in tasks:
                w = float(weights[t][n])
                if w <= 0:
                    continue
                row = arm[t]
                if impression:
                    row[0] += w
                    row[1] += w * w
                row[2] += w * float(bool(e["labels"].get(t, 0)))

    def figures(self) -> dict[str, dict[str, dict[str, float]]]:
        """{arm: {task: {impressions, positives, rate, lo, hi}}} (rate NaN before any impression)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for arm, tasks in self._sums.items():
            for t, (n, n2, pos) in tasks.items():
                rate = min(1.0, pos / n) if n > 0 else float("nan")
                lo, hi = wilson(rate, n * n / n2) if n > 0 else (float("nan"), float("nan"))
                out.setdefault(arm, {})[t] = {"impressions": n, "positives": pos, "rate": rate, "lo": lo, "hi": hi}
        return out

    def metrics(self) -> dict[str, float]:
        """:meth:`figures` flattened for logs and MLflow: ``arm_<arm>_<task>_rate`` (``_lo``,
        ``_hi``) and ``arm_<arm>_impressions`` (the click task's)."""
        out = {}
        for arm, tasks in self.figures().items():
            for t, f in tasks.items():
                if np.isfinite(f["rate"]):
                    out.update({f"arm_{arm}_{t}_rate": f["rate"], f"arm_{arm}_{t}_lo": f["lo"],
                                f"arm_{arm}_{t}_hi": f["hi"]})
            if "click" in tasks:
                out[f"arm_{arm}_impressions"] = tasks["click"]["impressions"]
        return out
