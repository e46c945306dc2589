"""Deep Retrieval (Gao et al., "Deep Retrieval: Learning a Retrievable Structure for
Large-Scale Recommendations", CIKM'21): items live on paths through D layers of K nodes.

- **Structure model** (:class:`DeepRetrieval`): layer d is an MLP over
  ``[user vector, code embeddings of c1..c(d-1)]`` with a K-way softmax, so
  ``p(c | user) = prod_d p(c_d | user, c_<d)``. Beam search with beam B returns the B most
  probable paths; the items on them are the candidates.
- **Multi-path**: each item holds J paths; the E-step maximizes
  ``log sum_j p(path_j(item) | user)`` over (user, item) pairs by SGD.
- **M-step** (:class:`PathAssignment`): while training, each pair's beam adds ``p(c | user)``
  to a running score ``s[item, c]``; the M-step gives each item the J paths that maximize
  ``log sum_j s[item, c_j] - alpha * sum_c f(|c|)`` greedily, with ``f(n) = n^4 / 4`` penalizing
  crowded paths (|c| = items on path c), which spreads items out.
- **Reranker**: a softmax over items on the user vector, trained jointly; at retrieval only the
  beam's items are scored, and they are returned in its order.

Paper settings on MovieLens-20M (the scale reference): K=50, D=3, B=25, J=3, alpha=3e-5.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

import models  # noqa: F401  (TF environment first)
import tensorflow as tf
import tf_keras as keras

from models.mmoe import mlp


def size_penalty(n: np.ndarray | int) -> np.ndarray | float:
    """f(|c|) = |c|^4 / 4, the paper's path-size penalty."""
    return np.asarray(n, dtype=np.float64) ** 4 / 4


class DeepRetrieval(keras.Model):
    """The structure model and the reranker.

    Args:
      n_items: catalogue size (items are indices 0..n_items-1).
      depth: D layers; width: K nodes per layer.
      code_dim: size of each layer's code embeddings.
      hidden: hidden sizes of each layer's MLP.
      user_dim: size of the user vector the model is given.
    """

    def __init__(self, n_items: int, depth: int = 3, width: int = 50, code_dim: int = 16,
                 hidden: tuple[int, ...] = (64,), user_dim: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.n_items, self.depth, self.width = n_items, depth, width
        self.codes = [keras.layers.Embedding(width, code_dim, name=f"code_{d}") for d in range(depth - 1)]
        self.layers_mlp = [mlp(hidden, f"layer_{d}", last=width) for d in range(depth)]
        self.reranker = keras.layers.Embedding(n_items, user_dim, name="reranker_items")
        self.reranker.build((None,))  # its table is used directly (full softmax) before any call

    def layer_log_probs(self, user: tf.Tensor, prefix: tf.Tensor) -> tf.Tensor:
        """log p(c_d | user, prefix) for every c_d: [n, K], with ``prefix`` [n, d] codes."""
        parts = [user] + [self.codes[i](prefix[:, i]) for i in range(prefix.shape[1])]
        return tf.nn.log_softmax(self.layers_mlp[prefix.shape[1]](tf.concat(parts, axis=1)))

    def path_log_prob(self, user: tf.Tensor, paths: tf.Tensor) -> tf.Tensor:
        """log p(path | user): [n], with ``paths`` [n, D]."""
        total = 0.0
        for d in range(self.depth):
            logp = self.layer_log_probs(user, paths[:, :d])
            total += tf.gather(logp, paths[:, d], batch_dims=1)
        return total

    def structure_loss(self, user: tf.Tensor, item_paths: tf.Tensor) -> tf.Tensor:
        """E-step loss: mean of -log sum_j p(path_j | user); ``item_paths`` [n, J, D]."""
        n, j = tf.shape(item_paths)[0], item_paths.shape[1]
        flat = tf.reshape(item_paths, (-1, self.depth))
        logp = self.path_log_prob(tf.repeat(user, j, axis=0), flat)
        return -tf.reduce_mean(tf.reduce_logsumexp(tf.reshape(logp, (n, j)), axis=1))

    def rerank_logits(self, user: tf.Tensor, items: tf.Tensor | None = None) -> tf.Tensor:
        """Reranker scores: [n, n_items] (all), or [n, m] for ``items`` [n, m] indices."""
        if items is None:
            return tf.matmul(user, self.reranker.embeddings, transpose_b=True)
        return tf.einsum("nd,nmd->nm", user, self.reranker(items))

    def rerank_loss(self, user: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """Softmax cross-entropy of the positive item over the catalogue."""
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(items, self.rerank_logits(user)))

    def sampled_rerank_loss(self, user: tf.Tensor, items: np.ndarray, negatives: np.ndarray,
                            item_log_q: np.ndarray, negative_log_q: np.ndarray) -> tf.Tensor:
        """Sampled softmax of the positive against drawn negatives, logQ-corrected.

        Each logit is reduced by the log probability its item was drawn with, so items drawn
        often (popular ones) are not pushed down more than the full softmax would push them.
        Negatives that are the positive itself or outside the catalogue (index -1) are masked.

        Args:
          items [n] positive indices; negatives [n, k] indices (or -1); *_log_q: log q of each.
        """
        valid = (negatives >= 0) & (negatives != items[:, None])
        candidates = np.concatenate([items[:, None], np.where(valid, negatives, 0)], axis=1)
        logits = self.rerank_logits(user, tf.constant(candidates))
        log_q = tf.constant(np.concatenate([item_log_q[:, None], negative_log_q], axis=1), tf.float32)
        mask = tf.constant(np.concatenate([np.ones((len(items), 1), bool), valid], axis=1))
        logits = tf.where(mask, logits - log_q, tf.fill(tf.shape(logits), -1e9))
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.zeros(len(items), tf.int32), logits))

    def beam_search(self, user: tf.Tensor, beam: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``beam`` most probable paths per user, best first (:meth:`beam` as arrays).

        Returns:
          paths [n, B, D] int32 (distinct within a row), log_probs [n, B] float32 (descending).
        """
        paths, scores = self.beam(user, beam)
        return paths.numpy(), scores.numpy()

    def beam(self, user: tf.Tensor, beam: int) -> tuple[tf.Tensor, tf.Tensor]:
        """:meth:`beam_search` as tensors; graph-safe (the batch size may be unknown)."""
        n = tf.shape(user)[0]
        paths = tf.zeros([n, 1, 0], tf.int32)
        scores = tf.zeros([n, 1])
        for d in range(self.depth):
            b = paths.shape[1]
            logp = self.layer_log_probs(tf.repeat(user, b, axis=0), tf.reshape(paths, [n * b, d]))
            total = tf.reshape(scores[:, :, None] + tf.reshape(logp, [n, b, self.width]), [n, b * self.width])
            scores, flat = tf.math.top_k(total, k=min(beam, b * self.width))
            parent, code = flat // self.width, flat % self.width
            paths = tf.concat([tf.gather(paths, parent, batch_dims=1), code[:, :, None]], axis=2)
        return paths, scores


class PathAssignment:
    """Each item's J paths, the streaming path scores of the M-step, and path -> items.

    Args:
      n_items, depth, width, paths_per_item: J paths per item, D layers of K nodes.
      decay: running scores are multiplied by this at each M-step (older evidence fades).
    """

    def __init__(self, n_items: int, depth: int, width: int, paths_per_item: int = 3, seed: int = 0,
                 decay: float = 0.5):
        self.depth, self.width, self.j, self.decay = depth, width, paths_per_item, decay
        rng = np.random.default_rng(seed)
        self.item_paths = rng.integers(0, width, size=(n_items, paths_per_item, depth), dtype=np.int32)
        self.scores: dict[int, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self._index()

    def _index(self) -> None:
        self.items_on: dict[tuple, list[int]] = defaultdict(list)
        for item, paths in enumerate(self.item_paths):
            for path in {tuple(p) for p in paths.tolist()}:
                self.items_on[path].append(item)

    def sizes(self) -> np.ndarray:
        """Items per non-empty path."""
        return np.array([len(v) for v in self.items_on.values()])

    def accumulate(self, items: np.ndarray, paths: np.ndarray, log_probs: np.ndarray) -> None:
        """Add each pair's beam (paths [n, B, D], log_probs [n, B]) to its item's path scores."""
        probs = np.exp(log_probs)
        for item, item_paths, p in zip(items.tolist(), paths, probs):
            row = self.scores[item]
            for path, prob in zip(map(tuple, item_paths.tolist()), p.tolist()):
                row[path] += prob

    def m_step(self, alpha: float, penalty=size_penalty) -> int:
        """Reassign paths of every item with scores (see the module docstring); returns how
        many items changed paths. Items without scores keep theirs."""
        counts: dict[tuple, int] = defaultdict(int)
        for path, items in self.items_on.items():
            counts[path] = len(items)
        changed = 0
        for item, row in self.scores.items():
            if not row:
                continue
            old = {tuple(p) for p in self.item_paths[item].tolist()}
            for path in old:
                counts[path] -= 1
            chosen: list[tuple] = []
            mass = 1e-12
            # the best-scored paths, and the item's current ones (score 0 if unseen): when every
            # scored path is crowded, the penalty can leave the item where it is
            candidates = sorted(row.items(), key=lambda kv: -kv[1])[:8 * self.j]
            scored = {p for p, _ in candidates}
            candidates += [(p, row.get(p, 0.0)) for p in old if p not in scored]
            for _ in range(self.j):
                best, best_gain = None, -np.inf
                for path, s in candidates:
                    if path in chosen:
                        continue
                    gain = np.log(mass + s) - np.log(mass) - alpha * (penalty(counts[path] + 1) - penalty(counts[path]))
                    if gain > best_gain:
                        best, best_gain = path, gain
                if best is None:
                    break
                chosen.append(best)
                mass += row[best]
                counts[best] += 1
            for path in [p for p in old if p not in chosen][: self.j - len(chosen)]:  # fewer candidates than J
                chosen.append(path)
                counts[path] += 1
            while len(chosen) < self.j:  # a repeated path: the item is on it once
                chosen.append(chosen[-1])
            if set(chosen) != old:
                changed += 1
            self.item_paths[item] = np.array(chosen, dtype=np.int32)
        for row in self.scores.values():
            for path in row:
                row[path] *= self.decay
        self._index()
        return changed

    def candidates(self, paths: np.ndarray) -> list[int]:
        """Items on any of ``paths`` [B, D], in beam order, each once."""
        return list(self.candidate_paths(paths))

    def candidate_paths(self, paths: np.ndarray) -> dict[int, tuple[int, ...]]:
        """{item: the first of ``paths`` [B, D] (in beam order) that holds it}, in beam order."""
        seen: dict[int, tuple[int, ...]] = {}
        for path in map(tuple, paths.tolist()):
            for item in self.items_on.get(path, ()):
                seen.setdefault(item, path)
        return seen
