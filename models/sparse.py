"""Feature plumbing between examples, embedding tables and a dense TensorFlow graph.

A batch's sparse features are grouped by table, each table's unique IDs are pulled once, the
dense graph runs on the pulled rows (a ``tf.function``), and the gradients with respect to
those rows are pushed back, where the table's optimizer applies them. The rows are plain
inputs of the graph: the graph owns no sparse parameters (Monolith's decoupling).

The same code runs against an in-process table (:class:`LocalTables`) or the parameter servers
(:class:`paramserver.client.PSClient`): both have ``pull(table, ids, insert)`` and
``push(table, ids, grads)``.

Example::

    slots = [Slot("user", "user_id"), Slot("item", "item_id"), Slot("history", "item_id")]
    batch = SparseBatch.from_examples(examples, slots)
    rows = batch.pull(source, insert=True)            # {table: [n_unique, dim] tensor}
    embedded = batch.embed(rows)                      # {slot: [batch, dim]}, mean-pooled
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Protocol

import numpy as np

import models  # noqa: F401  (TF environment first)
import tensorflow as tf

from paramserver.table import EmbeddingTable


class EmbeddingSource(Protocol):
    """What the plumbing needs from the parameter component."""

    def pull(self, table: str, ids, insert: bool = False) -> np.ndarray: ...

    def push(self, table: str, ids, grads: np.ndarray) -> int: ...


class LocalTables:
    """In-process tables behind the PS client's interface (tests, experiments, one-box runs)."""

    def __init__(self, tables: dict[str, EmbeddingTable]):
        self.tables = tables

    def pull(self, table: str, ids, insert: bool = False) -> np.ndarray:
        return self.tables[table].lookup(ids, insert=insert)

    def push(self, table: str, ids, grads: np.ndarray) -> int:
        return self.tables[table].apply_gradients(ids, grads)


def pull_tables(source: EmbeddingSource, ids: dict[str, np.ndarray], insert: bool = False) -> dict[str, np.ndarray]:
    """Rows of several tables, {table: [n, dim]}: at once when the source can (``pull_many``:
    the PS client calls every table's shards in parallel), else one table after another."""
    many = getattr(source, "pull_many", None)
    if many is not None:
        return many(ids, insert=insert)
    return {table: source.pull(table, i, insert=insert) for table, i in ids.items()}


class RequestRows:
    """One request's view of a source (read only): each (table, ID) is pulled at most once, so
    what a request pulled first (the user's rows, for retrieval) is what it reads again (for
    ranking), and only new IDs cost a call. Not for trainers: nothing is inserted."""

    def __init__(self, source: EmbeddingSource):
        self.source = source
        self._rows: dict[str, dict[int, np.ndarray]] = {}

    def pull(self, table: str, ids, insert: bool = False) -> np.ndarray:
        return self.pull_many({table: ids}, insert)[table]

    def prime(self, rows: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Rows the request got elsewhere (serving: the cached candidates' rows), {table: (IDs,
        rows)}, read as if pulled; IDs already pulled keep their pulled row."""
        for table, (ids, got) in rows.items():
            known = self._rows.setdefault(table, {})
            for i, row in zip(np.asarray(ids, np.uint64).tolist(), got):
                known.setdefault(i, row)

    def pull_many(self, ids: dict[str, np.ndarray], insert: bool = False) -> dict[str, np.ndarray]:
        if insert:
            raise ValueError("RequestRows is read only: pull with insert=True from the source itself")
        ids = {t: np.asarray(i, dtype=np.uint64) for t, i in ids.items()}
        missing = {}
        for table, wanted in ids.items():
            known = self._rows.setdefault(table, {})
            new = [i for i in dict.fromkeys(wanted.tolist()) if i not in known]
            if new:
                missing[table] = np.array(new, dtype=np.uint64)
        for table, rows in pull_tables(self.source, missing).items():
            self._rows[table].update(zip(missing[table].tolist(), rows))
        out = {}
        for table, wanted in ids.items():
            known = self._rows[table]
            out[table] = np.stack([known[i] for i in wanted.tolist()]) if len(wanted) else self.source.pull(table, wanted)
        return out


@dataclass(frozen=True)
class Slot:
    """A sparse feature slot of the examples (``Example.sparse[name]``) and the table holding
    its rows. A multi-valued slot (a history) is mean-pooled; an empty one embeds to zeros."""

    name: str
    table: str


@dataclass
class SparseBatch:
    """One batch's sparse IDs, deduplicated per table.

    Attributes:
      size: examples in the batch.
      unique: table -> unique IDs (uint64), the rows to pull.
      index: slot -> (positions into ``unique[slot.table]``, example index of each), flat.
    """

    size: int
    slots: list[Slot]
    unique: dict[str, np.ndarray]
    index: dict[str, tuple[np.ndarray, np.ndarray]]

    @classmethod
    def from_examples(cls, examples: list[dict], slots: list[Slot]) -> SparseBatch:
        """Group ``examples``' sparse IDs (``example["sparse"][slot]``, lists) by table."""
        flat: dict[str, tuple[list[int], list[int]]] = {s.name: ([], []) for s in slots}
        for row, example in enumerate(examples):
            sparse = example.get("sparse") or {}
            for slot in slots:
                ids = sparse.get(slot.name) or ()
                flat[slot.name][0].extend(ids)
                flat[slot.name][1].extend([row] * len(ids))
        return cls.from_columns(len(examples), slots, {
            name: (np.asarray(ids, dtype=np.uint64), np.asarray(rows, np.int32)) for name, (ids, rows) in flat.items()})

    @classmethod
    def from_columns(cls, size: int, slots: list[Slot], columns: dict[str, tuple[np.ndarray, np.ndarray]]) -> SparseBatch:
        """The batch of ``size`` examples whose slot ``s`` holds the IDs ``columns[s][0]``, each
        in the example ``columns[s][1]`` (same length; a missing slot is empty everywhere): what
        :meth:`from_examples` builds from dicts, for callers that hold arrays already."""
        empty = (np.empty(0, np.uint64), np.empty(0, np.int32))
        unique, index = {}, {}
        for table in dict.fromkeys(s.table for s in slots):
            mine = [s for s in slots if s.table == table]
            cols = [columns.get(s.name, empty) for s in mine]
            for s, (ids, rows) in zip(mine, cols):
                if len(ids) != len(rows):
                    raise ValueError(f"slot {s.name!r}: {len(ids)} IDs but {len(rows)} example indices")
            all_ids = np.concatenate([np.asarray(ids, dtype=np.uint64) for ids, _ in cols])
            unique[table], inverse = np.unique(all_ids, return_inverse=True)
            start = 0
            for s, (ids, rows) in zip(mine, cols):
                n = len(ids)
                index[s.name] = (inverse[start:start + n].astype(np.int32), np.asarray(rows, np.int32))
                start += n
        return cls(size, slots, unique, index)

    def pull(self, source: EmbeddingSource, insert: bool = False) -> dict[str, tf.Tensor]:
        """Each table's rows for its unique IDs, [n_unique, dim] float32 tensors, ready for
        :meth:`embed` (insert: trainers)."""
        return {table: tf.constant(rows) for table, rows in pull_tables(source, self.unique, insert).items()}

    def embed(self, rows: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """slot -> [size, dim]: the mean of the slot's rows per example (zeros when empty).
        Differentiable with respect to ``rows``."""
        return embed_slots(rows, self.tensors(), {s.name: s.table for s in self.slots}, self.size)

    def tensors(self) -> dict[str, tuple[tf.Tensor, tf.Tensor]]:
        """``index`` as tensors: what a ``tf.function`` takes as arguments (never baked in)."""
        return {name: (tf.constant(p), tf.constant(e)) for name, (p, e) in self.index.items()}


class CompiledGraph:
    """``fn`` (tensors in, tensors out) traced once per input structure with every leading
    dimension unknown, then called as that concrete function.

    A ``tf.function`` matches each call's arguments against every trace it holds; with nested
    inputs whose batch sizes vary (a feed's rows, a user's history) that matching cost ~2 ms
    per call. Here a call costs a dictionary lookup on the inputs' structure, dtypes and
    trailing dimensions, and batch sizes never cause a retrace.
    """

    def __init__(self, fn: Callable):
        self.fn = tf.function(fn)
        self._concrete: dict = {}

    def __call__(self, *args):
        key = _structure(args)
        concrete = self._concrete.get(key)
        if concrete is None:
            specs = tf.nest.map_structure(
                lambda t: tf.TensorSpec([None] * min(1, t.shape.rank) + t.shape[1:].as_list(), t.dtype), args)
            concrete = self._concrete[key] = self.fn.get_concrete_function(*specs)
        return concrete(*args)


def _structure(value):
    if isinstance(value, dict):
        return tuple((k, _structure(v)) for k, v in sorted(value.items()))
    if isinstance(value, (tuple, list)):
        return tuple(_structure(v) for v in value)
    return value.dtype, tuple(value.shape[1:])


def embed_slots(rows: dict[str, tf.Tensor], index: dict[str, tuple[tf.Tensor, tf.Tensor]],
                tables: dict[str, str], size) -> dict[str, tf.Tensor]:
    """slot -> [size, dim] mean of its rows (see :meth:`SparseBatch.embed`); graph-safe."""
    out = {}
    for slot, (positions, examples) in index.items():
        gathered = tf.gather(rows[tables[slot]], positions)
        out[slot] = tf.math.unsorted_segment_mean(gathered, examples, num_segments=size)
    return out


Gradients = dict[str, tuple[np.ndarray, np.ndarray]]
"""table -> (unique ids, row gradients): what a step hands to ``push_gradients`` (or to the
online trainer, which pushes with its exactly-once bookkeeping)."""


def train_step(source: EmbeddingSource, batch: SparseBatch, variables: list[tf.Variable], optimizer,
               loss_of: Callable[[dict[str, tf.Tensor]], tf.Tensor]) -> tuple[float, Gradients]:
    """One eager step of any graph over a batch's slot embeddings: pull (inserting), compute
    ``loss_of(slot embeddings)``, apply the dense gradients to ``variables``; returns the loss
    and the row gradients to push. (RankingTrainer has a compiled variant.)"""
    rows = batch.pull(source, insert=True)
    with tf.GradientTape() as tape:
        tape.watch(rows)
        loss = loss_of(batch.embed(rows))
    row_grads, var_grads = tape.gradient(loss, [rows, variables])
    optimizer.apply_gradients(zip(var_grads, variables))
    return float(loss), {t: (batch.unique[t], tf.convert_to_tensor(g).numpy()) for t, g in row_grads.items()}


class FrozenDense:
    """Stands in for a trainer's dense optimizer and applies nothing: online training updates
    the embeddings only, against the dense graph that serving uses (the champion's)."""

    def apply_gradients(self, grads_and_vars) -> None:
        return None


def merge_gradients(*parts: Gradients) -> Gradients:
    """Several steps' row gradients as one per table, summed per ID (one push per table)."""
    by_table: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for part in parts:
        for table, pair in part.items():
            by_table.setdefault(table, []).append(pair)
    out = {}
    for table, pairs in by_table.items():
        if len(pairs) == 1:
            out[table] = pairs[0]
            continue
        ids = np.concatenate([p[0] for p in pairs])
        grads = np.concatenate([p[1] for p in pairs])
        unique, inverse = np.unique(ids, return_inverse=True)
        summed = np.zeros((len(unique), grads.shape[1]), np.float32)
        np.add.at(summed, inverse, grads)
        out[table] = (unique, summed)
    return out


def push_gradients(source: EmbeddingSource, grads: Gradients) -> int:
    """Push each table's row gradients (the optimizer runs in the table); rows updated."""
    return sum(source.push(table, ids, g) for table, (ids, g) in grads.items())
