"""A plain-Python model of the embedding table's semantics, for property-based tests.

Exact counts instead of a sketch, dicts instead of a cuckoo map, NumPy float32 math with the
same formulas as paramserver/native/optimizers.hpp.
"""

from __future__ import annotations

import numpy as np

from paramserver.config import Adagrad, Ftrl, Sgd, TableConfig


def apply_optimizer(cfg: TableConfig, row: np.ndarray, g: np.ndarray) -> np.ndarray:
    """One optimizer step on a full row (embedding + slots), float32 like the native code."""
    d, opt = cfg.dim, cfg.optimizer
    row = row.astype(np.float32).copy()
    g = g.astype(np.float32)
    w = row[:d]
    lr = np.float32(opt.learning_rate)
    if isinstance(opt, Sgd):
        w -= lr * g
    elif isinstance(opt, Adagrad):
        acc = row[d:2 * d]
        acc += g * g
        w -= lr * g / (np.sqrt(acc) + np.float32(opt.epsilon))
    elif isinstance(opt, Ftrl):
        z, n = row[d:2 * d], row[2 * d:3 * d]
        n_new = n + g * g
        sigma = (np.sqrt(n_new) - np.sqrt(n)) / lr
        z += g - sigma * w
        n[:] = n_new
        quad = (np.float32(opt.beta) + np.sqrt(n_new)) / lr + np.float32(2 * opt.l2)
        w[:] = np.where(np.abs(z) <= opt.l1, np.float32(0), -(z - np.sign(z) * np.float32(opt.l1)) / quad)
    return row


def fresh_slots(cfg: TableConfig) -> np.ndarray:
    d, opt = cfg.dim, cfg.optimizer
    if isinstance(opt, Adagrad):
        return np.full(d, opt.initial_accumulator, np.float32)
    if isinstance(opt, Ftrl):
        return np.concatenate([np.zeros(d, np.float32), np.full(d, opt.initial_accumulator, np.float32)])
    return np.zeros(0, np.float32)


class ModelTable:
    """Reference semantics; ``initializer`` must be ``zeros`` (random init is checked apart)."""

    def __init__(self, cfg: TableConfig):
        assert cfg.initializer == "zeros"
        self.cfg = cfg
        self.rows: dict[int, np.ndarray] = {}
        self.updated: dict[int, int] = {}
        self.seen: dict[int, int] = {}
        self.dirty: set[int] = set()
        self.tombstones: list[int] = []

    def lookup(self, ids, insert: bool, now: int) -> np.ndarray:
        out = np.zeros((len(ids), self.cfg.dim), np.float32)
        for i, x in enumerate(ids):
            x = int(x)
            if x not in self.rows and insert:
                self.seen[x] = self.seen.get(x, 0) + 1
                if self.seen[x] >= self.cfg.admit_after:
                    self.rows[x] = np.concatenate([np.zeros(self.cfg.dim, np.float32), fresh_slots(self.cfg)])
                    self.updated[x] = now
                    self.dirty.add(x)
            if x in self.rows:
                out[i] = self.rows[x][: self.cfg.dim]
        return out

    def apply(self, ids, grads: np.ndarray, now: int) -> int:
        summed: dict[int, np.ndarray] = {}
        for x, g in zip(ids, grads):
            x = int(x)
            summed[x] = summed[x] + g if x in summed else g.astype(np.float32).copy()
        applied = 0
        for x, g in summed.items():
            if x in self.rows:
                self.rows[x] = apply_optimizer(self.cfg, self.rows[x], g)
                self.updated[x] = now
                self.dirty.add(x)
                applied += 1
        return applied

    def evict(self, now: int) -> int:
        if not self.cfg.ttl_seconds:
            return 0
        gone = [x for x, t in self.updated.items() if t + self.cfg.ttl_seconds < now]
        for x in gone:
            del self.rows[x], self.updated[x]
            self.dirty.discard(x)
            self.tombstones.append(x)
        return len(gone)

    def restore(self) -> None:
        """A snapshot restored into a fresh table: rows, update times and admission counts are
        kept; pending changes are not (the restored table has nothing to export yet)."""
        self.dirty.clear()
        self.tombstones.clear()

    def export_delta(self):
        ids = sorted(self.dirty)
        rows = {x: self.rows[x][: self.cfg.dim].copy() for x in ids}
        tomb = sorted(self.tombstones)
        self.dirty.clear()
        self.tombstones.clear()
        return rows, tomb
