"""Training and querying candidate generators on PS-held user features: one class per model
for batch and online training (only the input differs), like ``RankingTrainer``.

Both read the user's slot embeddings (user id, history, attributes) through the sparse
plumbing, turn them into a user vector with a ``UserTower``, and learn from (user, item)
positives: ``step(examples)`` updates the dense weights and returns the row gradients to push;
``train_batch`` pushes them too. Items are catalogue indices (``items`` maps ID -> index).

- :class:`DeepRetrievalTrainer`: the structure model's E-step, the reranker, and the streaming
  path scores (a beam per example); ``end_epoch`` runs the M-step. Queries score only the
  items on the beam's paths.
- :class:`TwoTowerTrainer`: in-batch softmax; queries score every item (brute force).
"""

from __future__ import annotations

import numpy as np

import models  # noqa: F401  (TF environment first)
import tensorflow as tf
import tf_keras as keras

from models.deep_retrieval import DeepRetrieval, PathAssignment
from models.sparse import CompiledGraph, EmbeddingSource, Gradients, Slot, SparseBatch, embed_slots, push_gradients, train_step
from models.two_tower import TwoTower, UserTower


class _UserModelTrainer:
    """What both trainers share: items, the user tower, the step around a loss."""

    def __init__(self, source: EmbeddingSource, slots: list[Slot], items: np.ndarray, user_dim: int,
                 learning_rate: float):
        self.source, self.slots, self.user_dim = source, list(slots), user_dim
        self.items = np.asarray(items)
        self.index_of = {int(i): n for n, i in enumerate(self.items)}
        self.tower = UserTower([s.name for s in self.slots], dim=user_dim)
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self._warm = False

    def _variables(self) -> list[tf.Variable]:
        raise NotImplementedError

    def _loss(self, user: tf.Tensor, item_idx: np.ndarray) -> tf.Tensor:
        raise NotImplementedError

    def step(self, examples: list[dict]) -> tuple[float, Gradients]:
        """One step on positives (``example["item_id"]``); returns the loss and row gradients."""
        item_idx = np.array([self.index_of[e["item_id"]] for e in examples])
        batch = SparseBatch.from_examples(examples, self.slots)
        if not self._warm:  # Keras creates weights on the first call
            self._loss(self._users(batch), item_idx)
            self._warm = True
        self._last = None
        loss, grads = train_step(self.source, batch, self._variables(), self.optimizer,
                                 lambda embedded: self._loss(self._remember(self.tower(embedded)), item_idx))
        self._after_step(item_idx)
        return loss, grads

    def _remember(self, user: tf.Tensor) -> tf.Tensor:
        self._last = user
        return user

    def _after_step(self, item_idx: np.ndarray) -> None:
        pass

    def train_batch(self, examples: list[dict]) -> float:
        loss, grads = self.step(examples)
        push_gradients(self.source, grads)
        return loss

    def user_vectors(self, queries: list[dict]) -> tf.Tensor:
        """User vectors for query examples (``sparse`` slots only; no inserts)."""
        return self._users(SparseBatch.from_examples(queries, self.slots))

    def _users(self, batch: SparseBatch) -> tf.Tensor:
        return self.tower(batch.embed(batch.pull(self.source)))


class DeepRetrievalTrainer(_UserModelTrainer):
    """Deep Retrieval over a user tower (see models/deep_retrieval.py for the model).

    Args:
      depth, width, beam, paths_per_item, alpha: D, K, B, J and the path-size penalty weight.
    """

    def __init__(self, source: EmbeddingSource, slots: list[Slot], items: np.ndarray, depth: int = 2,
                 width: int = 16, beam: int = 14, paths_per_item: int = 3, alpha: float = 1e-3,
                 user_dim: int = 32, learning_rate: float = 2e-3, seed: int = 0, prior_weight: float = 1.0,
                 beam_pool: int = 3):
        super().__init__(source, slots, items, user_dim, learning_rate)
        self.beam, self.alpha, self.prior_weight, self.beam_pool = beam, alpha, prior_weight, beam_pool
        self.popularity = np.zeros(len(self.items))  # recent engagements per item (set_popularity)
        self.prior = np.zeros(len(self.items), np.float32)  # added to the reranker's logits
        self.path_prior: dict[tuple[int, ...], float] = {}  # added to a path's log probability
        self.model = DeepRetrieval(len(self.items), depth=depth, width=width, user_dim=user_dim)
        self.paths = PathAssignment(len(self.items), depth, width, paths_per_item, seed=seed)
        self._search_graph: CompiledGraph | None = None

    def _variables(self):
        return self.tower.trainable_variables + self.model.trainable_variables

    def step(self, examples: list[dict]) -> tuple[float, Gradients]:
        """As the base class; when every example carries popularity-drawn ``retrieval_negatives``
        (the batch pipeline's), the reranker learns by a logQ-corrected sampled softmax over
        them instead of a softmax over the whole catalogue."""
        self._sampled = self._sampled_negatives(examples)
        try:
            return super().step(examples)
        finally:
            self._sampled = None

    def _sampled_negatives(self, examples: list[dict]):
        if not all(e.get("retrieval_negatives") for e in examples):
            return None
        k = min(len(e["retrieval_negatives"]) for e in examples)
        neg = np.array([[self.index_of.get(int(i), -1) for i in e["retrieval_negatives"][:k]] for e in examples])
        neg_log_q = np.array([e["retrieval_log_q"][:k] for e in examples], np.float32)
        own = np.array([e.get("item_log_q") if e.get("item_log_q") is not None else np.nan for e in examples],
                       np.float32)
        own = np.where(np.isnan(own), np.nanmean(neg_log_q), own)  # an item outside the day's clicks
        return neg, neg_log_q, own

    def _loss(self, user, item_idx):
        structure = self.model.structure_loss(user, tf.constant(self.paths.item_paths[item_idx]))
        sampled = getattr(self, "_sampled", None)
        if sampled is None:
            return structure + self.model.rerank_loss(user, item_idx)
        neg, neg_log_q, own_log_q = sampled
        return structure + self.model.sampled_rerank_loss(user, item_idx, neg, own_log_q, neg_log_q)

    accumulate_paths = True  # False online: no M-step runs there, the beam per step would be wasted

    def _after_step(self, item_idx):  # the streaming path scores of the M-step
        if not self.accumulate_paths:
            return
        self.paths.accumulate(item_idx, *self.model.beam_search(tf.stop_gradient(self._last), self.beam))

    def set_popularity(self, counts: np.ndarray) -> None:
        """The popularity prior from each item's recent engagements (``counts``, in
        :attr:`items` order), with ``w = prior_weight``:

        - the beam: the model's ``beam * beam_pool`` most probable paths are searched and the
          ``beam`` best by ``log p(path | user) + w * log(1 + engagements of its items)`` kept,
          so a user whose paths are flat (a cold one) gets the paths holding what is popular now;
        - the reranker: ``w * log(1 + count)`` is added to each item's logit, so among the
          beam's items the recently popular come first unless the user's vector says otherwise.
        """
        counts = np.asarray(counts, np.float64)
        if counts.shape != (len(self.items),):
            raise ValueError(f"popularity counts for {counts.shape} items; the catalogue has {len(self.items)}")
        self.popularity = counts
        self.prior = (self.prior_weight * np.log1p(counts)).astype(np.float32)
        self._path_prior()

    def _path_prior(self) -> None:
        searched = self.search_beam
        self.path_prior = {path: float(self.prior_weight * np.log1p(self.popularity[on].sum()))
                           for path, on in self.paths.items_on.items()} if self.popularity.any() and self.prior_weight > 0 else {}
        if self.search_beam != searched:
            self._search_graph = None  # the beam width is part of the compiled graph

    @property
    def search_beam(self) -> int:
        """Paths the beam search keeps per layer: ``beam``, times ``beam_pool`` with a prior."""
        return self.beam * self.beam_pool if self.path_prior else self.beam

    def end_epoch(self) -> int:
        """The M-step; returns how many items changed paths."""
        changed = self.paths.m_step(self.alpha)
        self._path_prior()
        return changed

    def retrieve(self, queries: list[dict], k: int, source: EmbeddingSource | None = None) -> list[tuple[list[int], int]]:
        """Per query: (top-k item IDs by the reranker among the beam's items, items scored).
        The user tower and the beam run as one compiled graph; ``source`` overrides where the
        user rows are pulled from (serving: one request's :class:`models.sparse.RequestRows`)."""
        return [(items, scored) for items, scored, _ in self.retrieve_with_paths(queries, k, source)]

    def retrieve_with_paths(self, queries: list[dict], k: int, source: EmbeddingSource | None = None
                            ) -> list[tuple[list[int], int, list[tuple[int, ...]]]]:
        """:meth:`retrieve`, plus for each item the beam path that brought it in (one code
        per layer: the first path of the beam holding the item)."""
        batch = SparseBatch.from_examples(queries, self.slots)
        logits, beams, log_probs = (t.numpy() for t in self._search(
            batch.pull(source or self.source), batch.tensors(), tf.constant(batch.size)))
        return [self.candidates_of(logits[n], beams[n], log_probs[n], k) for n in range(len(queries))]

    def select_paths(self, beams: np.ndarray, log_probs: np.ndarray) -> np.ndarray:
        """The ``beam`` paths of a searched pool [B', D] (log probabilities [B'], best first) that
        the items come from: the best by log probability plus path prior (see set_popularity)."""
        if not self.path_prior or len(beams) <= self.beam:
            return beams[:self.beam]
        bonus = np.array([self.path_prior.get(p, 0.0) for p in map(tuple, beams.tolist())])
        return beams[np.argsort(-(log_probs + bonus), kind="stable")[:self.beam]]

    def candidates_of(self, logits: np.ndarray, beams: np.ndarray, log_probs: np.ndarray,
                      k: int) -> tuple[list[int], int, list[tuple[int, ...]]]:
        """One user's (top-k item IDs, items scored, their paths) from the reranker's logits over
        every item [n_items] and the searched paths [B', D] with their log probabilities [B']:
        the items on the selected paths (:meth:`select_paths`), best logits plus item prior
        first."""
        on = self.paths.candidate_paths(self.select_paths(beams, log_probs))
        if not on:
            return [], 0, []
        cand = list(on)
        top = [cand[i] for i in np.argsort(-(logits[cand] + self.prior[cand]), kind="stable")[:k]]
        return [int(self.items[c]) for c in top], len(cand), [on[c] for c in top]

    def _search(self, rows, index, size):
        if self._search_graph is None:
            self._search_graph = CompiledGraph(self._user_beam)
        return self._search_graph(rows, index, size)

    def _user_beam(self, rows, index, size):
        users = self.tower(embed_slots(rows, index, {s.name: s.table for s in self.slots}, size))
        paths, log_probs = self.model.beam(users, self.search_beam)
        return self.model.rerank_logits(users), paths, log_probs  # every item's reranker score: [n, n_items]


class TwoTowerTrainer(_UserModelTrainer):
    """The tensorflow-recommenders two-tower baseline (see models/two_tower.py)."""

    def __init__(self, source: EmbeddingSource, slots: list[Slot], items: np.ndarray, user_dim: int = 32,
                 learning_rate: float = 2e-3):
        super().__init__(source, slots, items, user_dim, learning_rate)
        self.model = TwoTower(self.tower, len(self.items), dim=user_dim)

    def _variables(self):
        return self.model.trainable_variables

    def _loss(self, user, item_idx):
        return self.model.loss_of(user, tf.constant(item_idx))

    def retrieve(self, queries: list[dict], k: int) -> list[tuple[list[int], int]]:
        _, top = self.model.index(k)(self.user_vectors(queries))
        return [([int(self.items[i]) for i in row], len(self.items)) for row in top.numpy()]
