"""Benchmark of the collisionless embedding table against TensorFlow's MutableHashTable +
tf.gather and a Python dict + NumPy take, all in this run, on the same IDs.

1M rows, dim 64, random 64-bit IDs; lookups of batches of 4,096 and 65,536 existing IDs;
inserts of new IDs; Adagrad applies; memory per row against the raw payload; and the
admission filter's false-admission rate and bytes per tracked ID.

Run: ``make bench`` (or ``.venv/ml/bin/python bench/cuckoo_table.py --rows 200000`` for a
quick look).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import Figure, best_rate, report  # noqa: E402

from paramserver.config import Adagrad, TableConfig  # noqa: E402
from paramserver.table import EmbeddingTable  # noqa: E402

DIM = 64


def batches_rate(fn, batches: list[np.ndarray], repeat: int = 3) -> float:
    """Keys per second of ``fn`` over distinct batches (so caches do not flatter small ones)."""
    keys = sum(len(b) for b in batches)

    def run() -> None:
        for b in batches:
            fn(b)  # result dropped at once, as a caller that consumes it would (no page-fault storm)

    return best_rate(run, keys, repeat)


def tf_lookup_rate(ids: np.ndarray, queries: dict[int, list[np.ndarray]]) -> dict[int, float]:
    """MutableHashTable(id -> row) + tf.gather over a [rows, dim] variable."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    table = tf.lookup.experimental.MutableHashTable(tf.int64, tf.int64, default_value=-1)
    table.insert(tf.constant(ids.view(np.int64)), tf.range(len(ids), dtype=tf.int64))
    emb = tf.Variable(tf.random.uniform((len(ids), DIM)))

    @tf.function
    def lookup(q):
        return tf.gather(emb, table.lookup(q))

    rates = {}
    for n, batches in queries.items():
        tensors = [tf.constant(q.view(np.int64)) for q in batches]
        lookup(tensors[0])  # trace
        rates[n] = batches_rate(lambda q: lookup(q).numpy(), tensors)
    return rates


def dict_lookup_rate(ids: np.ndarray, queries: dict[int, list[np.ndarray]]) -> dict[int, float]:
    """A Python dict (id -> row) and NumPy take over a [rows, dim] array."""
    index = {int(x): i for i, x in enumerate(ids.tolist())}
    emb = np.random.default_rng(0).random((len(ids), DIM), dtype=np.float32)
    rates = {}
    for n, batches in queries.items():
        keys = [q.tolist() for q in batches]
        rates[n] = batches_rate(lambda k: emb.take([index[x] for x in k], axis=0), keys, repeat=2)
    return rates


def admission_figures(admit_after: int = 3, distinct: int = 2_000_000, width: int = 1 << 20) -> dict:
    """Zipf-like sightings of ``distinct`` IDs; how many IDs seen < N times got a row?"""
    rng = np.random.default_rng(7)
    ids = rng.integers(1, 2**63, distinct, dtype=np.uint64)
    counts = np.minimum(rng.zipf(1.6, distinct), 50)
    stream = np.repeat(ids, counts)
    rng.shuffle(stream)
    t = EmbeddingTable(TableConfig(name="adm", dim=1, admit_after=admit_after, sketch_width=width, sketch_depth=4))
    for chunk in np.array_split(stream, max(1, len(stream) // 65536)):
        t.lookup(chunk, insert=True)
    admitted = t.lookup(ids).any(axis=1) | (np.abs(t.lookup(ids)) > 0).any(axis=1)
    # a row exists iff admitted; rows may init to exact zeros only with prob ~0, so check stats too
    below = counts < admit_after
    stats = t.stats()
    false_rate = float(admitted[below].mean())
    return {"false_admission_rate": false_rate, "ids_below_threshold": int(below.sum()),
            "bytes_per_tracked_id": stats["sketch_bytes"] / stats["tracked_ids"],
            "sketch_bytes": stats["sketch_bytes"], "tracked_ids": stats["tracked_ids"],
            "admit_after": admit_after, "correct_admissions": int(admitted[~below].sum()) == int((~below).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-tf", action="store_true", help="skip the TensorFlow baseline")
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    ids = np.unique(rng.integers(1, 2**63, int(args.rows * 1.01), dtype=np.uint64))[: args.rows]
    rng.shuffle(ids)
    # distinct random batches, 2^19 keys per size: repeated small batches would sit in cache
    queries = {n: [rng.choice(ids, n) for _ in range((1 << 19) // n)] for n in (4096, 65536)}
    chunks = np.array_split(ids, max(1, len(ids) // 65536))

    def fill(cfg: TableConfig) -> tuple[EmbeddingTable, float]:
        table = EmbeddingTable(cfg)
        t0 = time.perf_counter()
        for c in chunks:
            table.lookup(c, insert=True)
        return table, len(ids) / (time.perf_counter() - t0)

    cfg = TableConfig(name="bench", dim=DIM, optimizer=Adagrad(learning_rate=0.05))
    grown, insert_grow = fill(cfg)
    del grown  # one 1M-row table in memory at a time
    table, insert_rate = fill(TableConfig(name="bench", dim=DIM, optimizer=Adagrad(learning_rate=0.05),
                                          expected_rows=len(ids)))
    ours = {n: batches_rate(table.lookup, batches) for n, batches in queries.items()}
    grads = rng.standard_normal((65536, DIM)).astype(np.float32)
    apply_rate = batches_rate(lambda q: table.apply_gradients(q, grads), queries[65536])
    stats = table.stats()
    raw = cfg.row_floats * 4

    dict_rates = dict_lookup_rate(ids, queries)
    tf_rates = {} if args.skip_tf else tf_lookup_rate(ids, queries)
    adm = admission_figures()
    adm_wide = admission_figures(width=1 << 21)

    figures = []
    for n in (4096, 65536):
        figures.append(Figure(f"lookup batch {n} vs tf MutableHashTable+gather", ours[n] / 1e6, "M keys/s",
                              tf_rates.get(n, 0) / 1e6 or None, "tf.lookup + tf.gather"))
        figures.append(Figure(f"lookup batch {n} vs python dict+take", ours[n] / 1e6, "M keys/s",
                              dict_rates[n] / 1e6, "dict + np.take"))
    figures += [
        Figure("insert, index sized by expected_rows", insert_rate / 1e6, "M keys/s", insert_grow / 1e6,
               "index grown on demand"),
        Figure("adagrad apply (batch 65536, dim 64)", apply_rate / 1e6, "M rows/s"),
        Figure("memory per row vs raw payload", stats["bytes"] / stats["rows"], "bytes/row", raw,
               "emb+slots float32", higher_is_better=False),
        Figure("admission: false-admission rate, sketch 2^20x4", adm["false_admission_rate"] * 100, "%",
               higher_is_better=False),
        Figure("admission: bytes per tracked id, sketch 2^20x4", adm["bytes_per_tracked_id"], "bytes",
               higher_is_better=False),
        Figure("admission: false-admission rate, sketch 2^21x4", adm_wide["false_admission_rate"] * 100, "%",
               higher_is_better=False),
        Figure("admission: bytes per tracked id, sketch 2^21x4", adm_wide["bytes_per_tracked_id"], "bytes",
               higher_is_better=False),
    ]
    path = report("cuckoo_table", figures, notes={"rows": args.rows, "dim": DIM, "stats": stats, "admission": [adm, adm_wide],
                                                   "targets": {"lookup_65536_Mkeys_s": 10, "insert_Mkeys_s": 3,
                                                               "memory_ratio": 1.25}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
