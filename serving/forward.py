"""The serving forward pass of the champion's dense graphs in NumPy: the user tower, Deep
Retrieval's beam and reranker, and MMoE's task probabilities, for one user at a time.

Training owns the models (TensorFlow, models/); serving only reads their weights, which do not
change while a version is served. Calling TensorFlow for a single user's feed costs more in
per-call and per-op overhead (argument conversion, signature matching, the executor) than the
arithmetic: ~4 of a feed's ~8 ms on the bench stack. Here the same layers run as NumPy matmuls
on the weights copied out of the Keras layers once per model version.

The pass is checked against TensorFlow's on the first feed of every model version
(serving/feed.py): a version whose layers this module does not know, whose pass fails, or
whose retrieved items, paths or scores differ, is served by TensorFlow instead
(``serving.forward``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class Unsupported(ValueError):
    """A layer or activation the NumPy pass does not implement: serve with TensorFlow."""


def _activation(layer) -> str:
    name = getattr(layer.activation, "__name__", str(layer.activation))
    if name not in ("relu", "linear", "softmax"):
        raise Unsupported(f"layer {layer.name}: activation {name!r} has no NumPy twin here")
    return name


@dataclass(frozen=True)
class Dense:
    kernel: np.ndarray
    bias: np.ndarray | None
    activation: str

    @classmethod
    def of(cls, layer) -> Dense:
        if type(layer).__name__ != "Dense":
            raise Unsupported(f"layer {layer.name}: {type(layer).__name__} has no NumPy twin here")
        bias = layer.bias.numpy() if layer.use_bias else None
        return cls(layer.kernel.numpy(), bias, _activation(layer))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.kernel
        if self.bias is not None:
            y += self.bias
        if self.activation == "relu":
            np.maximum(y, 0, out=y)
        elif self.activation == "softmax":
            y = softmax(y)
        return y


def stack_of(sequential) -> list[Dense]:
    return [Dense.of(layer) for layer in sequential.layers]


def run(layers: list[Dense], x: np.ndarray) -> np.ndarray:
    for layer in layers:
        x = layer(x)
    return x


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def segment_mean(rows: np.ndarray, segments: np.ndarray, n: int) -> np.ndarray:
    """[n, dim]: the mean of ``rows`` per segment, zeros for an empty one (as TensorFlow's
    ``unsorted_segment_mean``)."""
    out = np.zeros((n, rows.shape[1]), np.float32)
    np.add.at(out, segments, rows)
    counts = np.bincount(segments, minlength=n).astype(np.float32)
    return out / np.maximum(counts, 1)[:, None]


class Retriever:
    """The user tower, Deep Retrieval's beam and its reranker (models/retrieval.py,
    models/deep_retrieval.py) over one user's pooled slot embeddings."""

    def __init__(self, trainer):
        dr = trainer.model
        self.slots = [s.name for s in trainer.slots]
        self.tower = stack_of(trainer.tower.net)
        self.codes = [layer.embeddings.numpy() for layer in dr.codes]
        self.layers = [stack_of(mlp) for mlp in dr.layers_mlp]
        self.reranker = dr.reranker.embeddings.numpy()
        self.depth, self.width, self.beam_size = dr.depth, dr.width, trainer.search_beam

    def user(self, pooled: dict[str, np.ndarray]) -> np.ndarray:
        """[1, user_dim] from {slot: [dim]} (the tower's slot order)."""
        return run(self.tower, np.concatenate([pooled[s] for s in self.slots])[None, :])

    def search(self, user: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(reranker logits over every item [n_items], the searched paths [B', D], their log
        probabilities [B']) of one user, as ``DeepRetrieval.beam`` and ``rerank_logits``: the
        trainer's ``search_beam`` most probable paths, best first (ties to the lower index, as
        ``tf.math.top_k``)."""
        paths = np.zeros((1, 0), np.int32)
        scores = np.zeros(1, np.float32)
        for d in range(self.depth):
            b = len(paths)
            parts = [np.repeat(user, b, axis=0)] + [self.codes[i][paths[:, i]] for i in range(d)]
            logp = log_softmax(run(self.layers[d], np.concatenate(parts, axis=1)))
            total = (scores[:, None] + logp).reshape(-1)
            top = np.argsort(-total, kind="stable")[:min(self.beam_size, b * self.width)]
            paths = np.concatenate([paths[top // self.width], (top % self.width).astype(np.int32)[:, None]], axis=1)
            scores = total[top]
        return (user @ self.reranker.T)[0], paths, scores


class Ranker:
    """MMoE's serving scores (models/mmoe.py ``predict_scores``: no position bias)."""

    def __init__(self, trainer):
        mmoe = trainer.model
        self.slots = [s.name for s in trainer.slots]
        self.dense = len(trainer.dense)
        self.tasks = list(mmoe.tasks)
        self.experts = [stack_of(e) for e in mmoe.experts]
        self.gates = {t: Dense.of(mmoe.gates[t]) for t in self.tasks}
        self.towers = {t: stack_of(mmoe.towers[t]) for t in self.tasks}

    def scores(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """{task: probability [n]} for ``features`` [n, width]."""
        experts = np.stack([run(e, features) for e in self.experts], axis=1)  # [n, E, d]
        out = {}
        for t in self.tasks:
            mixed = np.einsum("ned,ne->nd", experts, self.gates[t](features))
            logit = run(self.towers[t], mixed)[:, 0]
            out[t] = 0.5 * (1 + np.tanh(0.5 * logit))  # the sigmoid, without exp's overflow
        return out


@dataclass(frozen=True)
class Forward:
    """Both NumPy passes of one loaded model version."""

    retriever: Retriever
    ranker: Ranker

    @classmethod
    def of(cls, model) -> Forward:
        """From a :class:`serving.loader.Loaded`; raises :class:`Unsupported`."""
        return cls(Retriever(model.retriever), Ranker(model.ranker))


def agrees(a: dict[str, np.ndarray], b: dict[str, np.ndarray], rtol: float = 1e-3, atol: float = 1e-5) -> bool:
    """The same tasks with close scores (float32 sums in another order differ in the last bits)."""
    return a.keys() == b.keys() and all(np.allclose(a[t], b[t], rtol=rtol, atol=atol) for t in a)
