"""Property-based tests: the native table behaves like the dictionary model, whatever the
sequence of lookups, gradient steps, clock moves, evictions and delta exports."""

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from table_model import ModelTable

from paramserver.config import Adagrad, Ftrl, Sgd, TableConfig
from paramserver.table import EmbeddingTable

DIM = 4
ids_st = st.lists(st.integers(min_value=0, max_value=15), min_size=1, max_size=24)
optimizers = st.sampled_from([Sgd(learning_rate=0.1), Adagrad(learning_rate=0.1),
                              Ftrl(learning_rate=0.1, l1=0.01, l2=0.01, beta=0.5)])


class TableMachine(RuleBasedStateMachine):
    @initialize(optimizer=optimizers, admit_after=st.integers(1, 3), ttl=st.sampled_from([0, 5, 20]))
    def setup(self, optimizer, admit_after, ttl):
        cfg = TableConfig(name="prop", dim=DIM, optimizer=optimizer, initializer="zeros",
                          admit_after=admit_after, ttl_seconds=ttl, sketch_width=1 << 16)
        self.table, self.model, self.now = EmbeddingTable(cfg), ModelTable(cfg), 1000
        warm = list(range(8)) * admit_after  # most steps then touch admitted rows
        self.lookup(warm, insert=True)

    @rule(ids=ids_st, insert=st.booleans())
    def lookup(self, ids, insert):
        got = self.table.lookup(np.array(ids, np.uint64), insert=insert, now=self.now)
        want = self.model.lookup(ids, insert, self.now)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    @rule(ids=ids_st, seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.0, 0.01, 1.0, 30.0]))
    def apply(self, ids, seed, scale):
        grads = (np.random.default_rng(seed).standard_normal((len(ids), DIM)) * scale).astype(np.float32)
        got = self.table.apply_gradients(np.array(ids, np.uint64), grads, now=self.now)
        assert got == self.model.apply(ids, grads, self.now)

    @rule(seconds=st.sampled_from([0, 1, 5, 10, 20]))
    def tick(self, seconds):
        self.now += seconds

    @rule()
    def evict(self):
        assert self.table.evict(now=self.now) == self.model.evict(self.now)

    @rule()
    def export(self):
        delta = self.table.export_delta()
        rows, tombstones = self.model.export_delta()
        assert sorted(delta.ids.tolist()) == list(rows)
        for x, row in zip(delta.ids.tolist(), delta.rows):
            np.testing.assert_allclose(row, rows[x], rtol=1e-5, atol=1e-6)
        assert sorted(delta.tombstones.tolist()) == tombstones

    @invariant()
    def same_rows(self):
        if hasattr(self, "table"):
            assert len(self.table) == len(self.model.rows)


TestTableMatchesModel = TableMachine.TestCase
TestTableMatchesModel.settings = settings(max_examples=80, stateful_step_count=40, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
