"""CompiledGraph: one trace per input structure, whatever the batch sizes; results as eager."""

import numpy as np

import models  # noqa: F401  (TF environment first)
import tensorflow as tf

from models.sparse import CompiledGraph


def test_traced_once_per_structure_and_equal_to_eager():
    traces = []

    def fn(rows, index, size):
        traces.append(1)
        pooled = tf.math.unsorted_segment_mean(tf.gather(rows["t"], index["s"][0]), index["s"][1], size)
        return {"sum": tf.reduce_sum(pooled, axis=1)}

    graph = CompiledGraph(fn)
    rng = np.random.default_rng(0)
    for n in (3, 7, 1, 12):
        rows = {"t": tf.constant(rng.normal(size=(n, 4)), tf.float32)}
        index = {"s": (tf.constant(rng.integers(0, n, size=2 * n), tf.int32), tf.constant(np.repeat(np.arange(n), 2), tf.int32))}
        got = graph(rows, index, tf.constant(n))
        np.testing.assert_allclose(got["sum"].numpy(), fn(rows, index, tf.constant(n))["sum"].numpy(), rtol=1e-6)
    assert len(traces) == 1 + 4  # one trace, then the four eager references
    graph({"t": tf.zeros((2, 5))}, {"s": (tf.constant([0], tf.int32), tf.constant([0], tf.int32))}, tf.constant(1))
    assert len(traces) == 6  # another row width: a new trace
