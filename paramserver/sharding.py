"""Which parameter-server shard owns a feature ID: a stable hash, the same in every process."""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def shard_of(ids: np.ndarray, shards: int) -> np.ndarray:
    """Shard index (int64) of each uint64 ID: the high 32 bits of a multiplicative hash,
    modulo ``shards``. Stable across processes, platforms and releases."""
    if shards == 1:
        return np.zeros(len(ids), dtype=np.int64)
    with np.errstate(over="ignore"):
        mixed = ids * _GOLDEN  # wraps modulo 2^64 by design
    return ((mixed >> np.uint64(32)) % np.uint64(shards)).astype(np.int64)


def split(ids: np.ndarray, shards: int) -> list[np.ndarray]:
    """Positions of ``ids`` owned by each shard (a list of index arrays, one per shard)."""
    owner = shard_of(ids, shards)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(shards + 1))
    return [order[bounds[s]:bounds[s + 1]] for s in range(shards)]
