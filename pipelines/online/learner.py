"""The model part of online training: the champion's ranker and retriever over the training PS,
learning embeddings from each batch of joined examples, with progressive validation.

- **Same code as batch**: ``RankingTrainer.step`` and ``DeepRetrievalTrainer.step`` (clicks
  only) on the example dicts from Kafka; sample-rate correction is in the loss (1/rate per task).
- **Dense weights frozen** (``online.train_dense: false``, the default): serving ranks with the
  champion's dense graph, so the embeddings learn against that graph. A new champion is picked
  up between batches.
- **One impression, trained once per task**: the joiner's cumulative re-emissions (click, then
  click + like, ...) train only the tasks whose label rose (pipelines/online/upgrades.py).
- **Steps sized as in the daily retrain** (``online.step_scale: batch``): the loss is a mean
  over the batch, and online batches are small when traffic is (a few examples instead of the
  retrain's ``batch.batch_size``), so each example would move its rows many times further than
  in batch training; row gradients are scaled by ``len(batch) / reference_batch``.
  experiments/online_vs_batch.py measured the difference on ml-100k: unscaled, online training
  lost ~0.05 AUC against the batch model; scaled, it gains 0.004-0.007. ``personal_tables``
  (``online.personal_tables``: rows only one user's examples touch, the user ID) keep the
  batch's mean step, so a user's own row follows their actions within a few syncs.
- **Delayed feedback** (``online.delayed_feedback``, pipelines/online/delayed.py): ``fnw``, the
  default, trains each impression at once from the joiner's provisional negative and every
  positive again, with fake negative weighting; ``wait`` trains the joiner's final examples.
- **Each A/B arm's rates** (pipelines/online/arms.py): impressions and positives per arm and
  task from the examples trained, with 95% intervals.
- **Progressive validation**: each batch is scored *before* it trains, so the rolling AUC over
  the last ``window`` examples measures the model on data it has not seen (Monolith's online
  metric), with each example's labels and sampling weights as trained (under ``fnw``: every
  impression a negative at first, its positives when they come).

Use it as the ``step`` of :class:`pipelines.online.trainer.OnlineTrainer`.
"""

from __future__ import annotations

import collections
import logging
import time

import numpy as np

from models.evaluation import auc_per_task
from models.mmoe import task_weights
from models.sparse import FrozenDense, Gradients, merge_gradients
from pipelines.online import delayed
from pipelines.online.arms import ArmRates
from pipelines.online.upgrades import LabelUpgrades

log = logging.getLogger(__name__)


class OnlineLearner:
    """``step(examples, ps)`` for the online trainer; ``metrics()`` for logs and MLflow."""

    def __init__(self, loader, train_dense: bool = False, window: int = 20_000, reference_batch: int | None = None,
                 personal_tables: tuple[str, ...] = (), delayed_feedback: str = "fnw"):
        if delayed_feedback not in delayed.METHODS:
            raise ValueError(f"delayed_feedback {delayed_feedback!r}: one of {', '.join(delayed.METHODS)}")
        self.loader, self.train_dense = loader, train_dense
        self.fnw = delayed_feedback == "fnw"
        self.reference_batch = reference_batch  # None: each batch's mean loss as it is
        self.personal_tables = set(personal_tables)  # not scaled: one user's rows, no crowd to overshoot
        self.version: str | None = None
        self.window = window
        self.recent: collections.deque = collections.deque(maxlen=window)  # (labels, weights, scores)
        self.examples = 0
        self.upgrades = LabelUpgrades()
        self.provisional = self.final_negatives = 0  # fnw: what the joiner sends (_check_provisional)
        self._warned = False
        self.impressions = delayed.ImpressionScores()  # fnw: a positive is validated with its impression's score
        self.arms = ArmRates(provisional_impressions=self.fnw)  # each A/B arm's rates from these examples (pipelines/online/arms.py)
        self.started = time.monotonic()
        self._rate = (time.monotonic(), 0)
        self.examples_per_s = 0.0

    def _models(self):
        model = self.loader.current
        if model is None:
            raise RuntimeError("no champion model to train online: publish one with the daily retrain first")
        if model.version != self.version:
            if not self.train_dense:
                model.ranker.optimizer = FrozenDense()
                model.retriever.optimizer = FrozenDense()
            model.retriever.accumulate_paths = False  # paths change at the daily retrain's M-step only
            self.version = model.version
        return model

    def step(self, examples: list[dict], ps) -> Gradients:
        """Score (progressive validation), then the row gradients of both models for ``examples``.
        ``ps`` is the client the loaded models pull through (the loader's source)."""
        model = self._models()
        tasks = list(model.ranker.model.tasks)
        received = len(examples)
        if self.fnw:
            self._check_provisional(examples)
        else:  # provisional negatives (a joiner still sending them) would count each negative twice
            examples = [e for e in examples if not e.get("provisional")]
        self.arms.add(examples, tasks)
        examples = self.upgrades.apply(examples, tasks)
        if self.fnw:  # provisional negatives, and positives only: the rest went in as provisional
            examples = delayed.trainable(examples, tasks)
        if not examples:  # repeats only: nothing new to learn
            self.examples += received
            self._count(received)
            return {}
        scores = model.ranker.score(examples)
        weights = task_weights(examples, tasks)
        validation = (self.impressions.validation(examples, scores, tasks) if self.fnw
                      else [{t: float(scores[t][n]) for t in tasks} for n in range(len(examples))])
        for n, e in enumerate(examples):
            self.recent.append(({t: e["labels"].get(t, 0) for t in tasks}, {t: float(weights[t][n]) for t in tasks},
                                validation[n]))
        _, ranking = model.ranker.step(delayed.weighted(examples, scores, tasks) if self.fnw else examples)
        clicks = [e for n, e in enumerate(examples) if e["labels"].get("click") and weights["click"][n] > 0
                  and e["item_id"] in model.retriever.index_of]  # an upgrade of a trained click: not again
        parts = [ranking]
        if clicks:
            _, retrieval = model.retriever.step(clicks)
            parts.append(retrieval)
        self.examples += received
        self._count(received)
        merged = merge_gradients(*parts)
        if self.reference_batch:
            scale = np.float32(len(examples) / self.reference_batch)
            merged = {table: (ids, grads if table in self.personal_tables else grads * scale)
                      for table, (ids, grads) in merged.items()}
        return merged

    def _check_provisional(self, examples: list[dict]) -> None:
        """fnw trains negatives from the joiner's provisional ones only: say so loudly when
        final negatives come and no provisional one ever did (a joiner started without
        ``--provisional-negatives``), as training then sees positives alone."""
        for e in examples:
            if e.get("provisional"):
                self.provisional += 1
            elif not any((e.get("labels") or {}).values()):
                self.final_negatives += 1
        if self.provisional == 0 and self.final_negatives >= 100 and not self._warned:
            self._warned = True
            log.error("online.delayed_feedback is fnw, but %d final negatives came and no provisional one: the joiner "
                      "runs without --provisional-negatives, so training sees positives alone. Restart the joiner "
                      "with this config (make joiner-stop && make joiner-resume), or set online.delayed_feedback: wait",
                      self.final_negatives)

    def forget(self) -> None:
        """The trainer rolled back: the examples it replays are trained as new."""
        self.upgrades.forget()

    def _count(self, n: int) -> None:
        since, count = self._rate
        now, count = time.monotonic(), count + n
        if now - since >= 5:
            self.examples_per_s, self._rate = count / (now - since), (now, 0)
        else:
            self._rate = (since, count)

    def metrics(self) -> dict[str, float]:
        """Rolling AUC per task over the last ``window`` examples, examples/s, examples so far,
        and each A/B arm's rates (``arm_*``)."""
        out = {"examples": float(self.examples), "examples_per_s": self.examples_per_s, **self.arms.metrics()}
        if self.fnw:
            out["provisional_negatives"] = float(self.provisional)
        if len(self.recent) >= 100:
            tasks = list(self.recent[0][0])
            labels = {t: np.array([r[0][t] for r in self.recent]) for t in tasks}
            weights = {t: np.array([r[1][t] for r in self.recent]) for t in tasks}
            scores = {t: np.array([r[2][t] for r in self.recent]) for t in tasks}
            out.update({f"rolling_auc_{t}": v for t, v in auc_per_task(labels, scores, weights).items()
                        if np.isfinite(v)})
        return out
