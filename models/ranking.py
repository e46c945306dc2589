"""Training and scoring the ranker on PS-held embeddings: one class for batch and online.

``RankingTrainer.step(examples)`` pulls the batch's rows, runs the MMoE graph in a
``tf.function``, applies the dense gradients (Keras optimizer, dense weights live in the
model) and returns the sparse gradients per table, for the caller to push: the online
trainer (pipelines/online) pushes them with its exactly-once bookkeeping;
``train_batch`` pushes them itself (batch training, experiments).

Examples are :class:`streaming.schemas.Example` dicts: ``sparse`` (slot -> IDs), ``dense``
(name -> float), ``position``, ``labels`` (task -> 0/1), ``sample_rate`` and optionally
``sample_rates`` (task -> rate; see ``streaming.sampling``).
"""

from __future__ import annotations

import numpy as np

import models  # noqa: F401  (TF environment first)
import tensorflow as tf
import tf_keras as keras

from models.mmoe import MMoE, task_weights, weighted_loss
from models.sparse import CompiledGraph, EmbeddingSource, Gradients, Slot, SparseBatch, embed_slots, push_gradients


class RankingTrainer:
    """MMoE over slot embeddings (pulled from ``source``) and dense features.

    Args:
      model: the dense graph.
      slots: sparse slots, in the order their embeddings are concatenated.
      dense: dense feature names (missing ones read 0).
      source: in-process tables or the PS client.
      optimizer: for the dense weights (the sparse optimizer runs in the tables).
    """

    def __init__(self, model: MMoE, slots: list[Slot], dense: list[str], source: EmbeddingSource,
                 optimizer: keras.optimizers.Optimizer | None = None):
        self.model, self.slots, self.dense, self.source = model, list(slots), list(dense), source
        self.optimizer = optimizer or keras.optimizers.Adam(learning_rate=1e-3)
        self._tables = {s.name: s.table for s in self.slots}
        self._score_graph: CompiledGraph | None = None
        self._shared_graphs: dict[tuple[str, ...], CompiledGraph] = {}

    def inputs(self, examples: list[dict]) -> tuple[SparseBatch, dict]:
        batch = SparseBatch.from_examples(examples, self.slots)
        dense = np.array([[e.get("dense", {}).get(n, 0.0) for n in self.dense] for e in examples], np.float32)
        dense = dense.reshape(len(examples), len(self.dense))
        return batch, {
            "dense": tf.constant(dense),
            "position": tf.constant([e.get("position", 0) for e in examples], tf.int32),
            # served features have no labels yet (scoring): zeros, unused
            "labels": {t: tf.constant([e.get("labels", {}).get(t, 0) for e in examples], tf.float32)
                       for t in self.model.tasks},
            "weights": {t: tf.constant(w) for t, w in task_weights(examples, self.model.tasks).items()},
        }

    def _features(self, rows, index, dense):
        embedded = embed_slots(rows, index, self._tables, tf.shape(dense)[0])
        return tf.concat([embedded[s.name] for s in self.slots] + [dense], axis=1)

    @tf.function(reduce_retracing=True)
    def _grad_step(self, rows, index, batch):
        with tf.GradientTape() as tape:
            tape.watch(rows)
            features = self._features(rows, index, batch["dense"])
            logits = self.model({"features": features, "position": batch["position"]}, training=True)
            loss = weighted_loss(logits, batch["labels"], batch["weights"])
        dense_vars = self.model.trainable_variables
        grads = tape.gradient(loss, [rows, dense_vars])
        self.optimizer.apply_gradients(zip(grads[1], dense_vars))
        return loss, {t: tf.convert_to_tensor(g) for t, g in grads[0].items()}

    def step(self, examples: list[dict]) -> tuple[float, Gradients]:
        """One training step on ``examples``: dense weights updated here; returns the loss and
        {table: (unique ids, row gradients)} to push."""
        batch, tensors = self.inputs(examples)
        rows = batch.pull(self.source, insert=True)
        if not self.model.built:  # Keras creates the weights on the first call, outside tf.function
            self.model({"features": self._features(rows, batch.tensors(), tensors["dense"]),
                        "position": tensors["position"]}, training=True)
        loss, grads = self._grad_step(rows, batch.tensors(), tensors)
        return float(loss), {t: (batch.unique[t], g.numpy()) for t, g in grads.items()}

    def train_batch(self, examples: list[dict]) -> float:
        """``step``, then push the sparse gradients to the source; returns the loss."""
        loss, grads = self.step(examples)
        push_gradients(self.source, grads)
        return loss

    def _scores(self, rows, index, dense):
        if self._score_graph is None:
            self._score_graph = CompiledGraph(
                lambda rows, index, dense: self.model.predict_scores({"features": self._features(rows, index, dense)}))
        return self._score_graph(rows, index, dense)

    def score(self, examples: list[dict]) -> dict[str, np.ndarray]:
        """Serving scores per task (no position bias, no inserts), {task: [n]}; one compiled
        graph (traced again only when the slots' shapes generalise)."""
        batch = SparseBatch.from_examples(examples, self.slots)
        dense = np.array([[e.get("dense", {}).get(n, 0.0) for n in self.dense] for e in examples], np.float32)
        rows = batch.pull(self.source)
        scores = self._scores(rows, batch.tensors(), tf.constant(dense.reshape(len(examples), len(self.dense))))
        return {t: v.numpy() for t, v in scores.items()}

    def score_candidates(self, shared: dict[str, list[int]], items: list[dict[str, list[int]]],
                         source: EmbeddingSource | None = None) -> dict[str, np.ndarray]:
        """:meth:`score` of one user's candidates, {task: [len(items)]}: the ``shared`` slots
        (the user's: id, history, attributes) are pulled and pooled once and broadcast to every
        candidate, whose own slots come from ``items``; dense features read 0. ``source``
        overrides where rows are pulled from (serving: one request's ``RequestRows``)."""
        columns: dict[str, tuple[list[int], list[int]]] = {}
        for n, row in enumerate(items):
            for slot, ids in row.items():
                col = columns.setdefault(slot, ([], []))
                col[0].extend(ids)
                col[1].extend([n] * len(ids))
        return self.score_columns(shared, len(items), {s: (np.asarray(i, np.uint64), np.asarray(r, np.int32))
                                                       for s, (i, r) in columns.items()}, source)

    def score_columns(self, shared: dict[str, list[int]], n: int, columns: dict[str, tuple[np.ndarray, np.ndarray]],
                      source: EmbeddingSource | None = None) -> dict[str, np.ndarray]:
        """:meth:`score_candidates` with the ``n`` candidates' slots as arrays: ``columns[slot]``
        is (the IDs, flat; the candidate, 0..n-1, each belongs to). The serving path: no
        per-candidate dict is built."""
        overlap = set(shared) & set(columns)
        if overlap:
            raise ValueError(f"slots {sorted(overlap)} are both shared and per candidate; give each once")
        merged = {slot: (np.asarray(ids, np.uint64), np.zeros(len(ids), np.int32)) for slot, ids in shared.items()}
        merged.update({slot: (ids, np.asarray(rows, np.int32) + 1) for slot, (ids, rows) in columns.items()})
        batch = SparseBatch.from_columns(n + 1, self.slots, merged)  # row 0: the shared slots
        rows = batch.pull(source or self.source)
        dense = tf.zeros((n, len(self.dense)))
        common = tuple(s.name for s in self.slots if s.name in shared)
        if common not in self._shared_graphs:
            self._shared_graphs[common] = CompiledGraph(
                lambda rows, index, dense: self._scores_shared(rows, index, dense, common))
        scores = self._shared_graphs[common](rows, batch.tensors(), dense)
        return {t: v.numpy() for t, v in scores.items()}

    def _scores_shared(self, rows, index, dense, common: tuple[str, ...]):
        n = tf.shape(dense)[0]
        embedded = embed_slots(rows, index, self._tables, n + 1)  # row 0: the shared slots
        parts = [tf.repeat(embedded[s.name][:1], n, axis=0) if s.name in common else embedded[s.name][1:]
                 for s in self.slots]
        return self.model.predict_scores({"features": tf.concat(parts + [dense], axis=1)})
