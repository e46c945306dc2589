"""Delayed feedback in online training: fake negative weighting (FNW).

Labels arrive late: an action may come up to ``joiner.label_window_s`` (30 min) after the item
was shown, so the joiner knows an impression is a negative only when that window closes. A
trainer that waits for the window learns from positives alone for its first half hour and
from every negative half an hour late.

FNW (Ktena et al., "Addressing Delayed Feedback for Continuous Training with Neural Networks in
CTR prediction", RecSys 2019) trains on every impression at once: the joiner sends it as a
``provisional`` negative when its features arrive (``--provisional-negatives``), and each
positive again when its action arrives. In that stream an item with true probability ``p``
is a positive with probability ``p / (1 + p)`` and a negative with ``1 / (1 + p)``;
importance weights make the loss the one of the true labels:

- provisional negative: ``(1 - p)(1 + p)``, times ``1 / sample rate`` (the joiner keeps
  negatives at ``joiner.negative_rate``);
- positive (a task's label rising, as LabelUpgrades passes it): ``1 + p``;
- ``p`` is the model's own score of the example before it trains (progressive validation
  computes it anyway), taken as a constant (no gradient through the weight).

Only provisional negatives and positives train: the joiner's final negatives (label window
closed, or a skip) and the 0 labels of a positive's other tasks are already in as the
provisional negative. A skip is thus a plain negative, not a sure one.

The rolling AUC (pipelines/online/learner.py) is measured on this stream as trained, with
the sampling weights only: every impression is a negative there, including the ones clicked
later, so it reads ``(1 - r) AUC + r / 2`` for a task with positive rate ``r`` (click at 7%:
0.68 reads 0.667), slightly below the AUC on final labels. A positive is validated with the
score its impression had when its provisional negative came (:class:`ImpressionScores`):
scored when it comes, it would be scored after training on itself as a negative, which
reads every positive low (measured in `make demo`: click 0.43-0.48 for the first minutes).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from models.mmoe import task_weights

METHODS = ("fnw", "wait")


def trainable(examples: list[dict], tasks: list[str]) -> list[dict]:
    """What FNW trains of a batch (after LabelUpgrades): provisional negatives as they are, and
    of the others only their positive tasks (``sample_rates`` 0 for the rest); an example with
    no positive task left is dropped."""
    out = []
    weights = task_weights(examples, tasks)
    for n, e in enumerate(examples):
        if e.get("provisional"):
            out.append(e)
            continue
        labels = e.get("labels", {})
        rates = {t: (1.0 / float(weights[t][n]) if labels.get(t) and weights[t][n] > 0 else 0.0) for t in tasks}
        if any(rates.values()):
            out.append({**e, "sample_rates": rates})
    return out


def weighted(examples: list[dict], scores: dict[str, np.ndarray], tasks: list[str]) -> list[dict]:
    """``examples`` (from :func:`trainable`) with the FNW importance weight of each task folded
    into ``sample_rates`` (loss weight = 1 / rate), given the model's ``scores`` {task: [n]}."""
    weights = task_weights(examples, tasks)
    out = []
    for n, e in enumerate(examples):
        rates = {}
        for t in tasks:
            p = float(np.clip(scores[t][n], 0.0, 1.0))
            w = float(weights[t][n]) * ((1 - p) * (1 + p) if e.get("provisional") else 1 + p)
            rates[t] = 1.0 / w if w > 0 else 0.0
        out.append({**e, "sample_rates": rates})
    return out


class ImpressionScores:
    """Each provisional negative's scores, per (request_id, item_id), for the last ``capacity``
    impressions (size it to one label window of kept impressions), so the impression's positive
    is validated with the score the model gave it before learning anything about it."""

    def __init__(self, capacity: int = 500_000):
        self.capacity = capacity
        self._scores: OrderedDict[tuple, dict[str, float]] = OrderedDict()

    def validation(self, examples: list[dict], scores: dict[str, np.ndarray], tasks: list[str]) -> list[dict[str, float]]:
        """Per example, the scores to validate it with: its own for a provisional negative
        (remembered), its impression's for a positive when remembered, else its own."""
        out = []
        for n, e in enumerate(examples):
            own = {t: float(scores[t][n]) for t in tasks}
            key = (e.get("request_id"), e.get("item_id"))
            if e.get("provisional"):
                self._scores[key] = own
                self._scores.move_to_end(key)
                out.append(own)
            else:
                out.append(self._scores.get(key, own))
        while len(self._scores) > self.capacity:
            self._scores.popitem(last=False)
        return out
