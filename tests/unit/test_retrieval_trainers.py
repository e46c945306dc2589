"""Retrieval trainers: ``step`` returns row gradients without pushing (the online trainer
pushes them), ``train_batch`` pushes; both models learn a planted preference."""

import numpy as np
import pytest

from models.retrieval import DeepRetrievalTrainer, TwoTowerTrainer
from models.sparse import LocalTables, Slot, push_gradients
from paramserver.config import Adagrad, TableConfig
from paramserver.table import EmbeddingTable

SLOTS = [Slot("user", "user_id")]
ITEMS = np.arange(100, 124)


def source() -> LocalTables:
    return LocalTables({"user_id": EmbeddingTable(TableConfig(name="user_id", dim=8, optimizer=Adagrad(0.2), seed=1))})


def pairs(n: int, seed: int) -> list[dict]:
    """User u likes items 100 + (u % 6) * 4 .. + 3: six taste groups over 24 items."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 60, size=n)
    return [{"sparse": {"user": [int(u)]}, "item_id": int(100 + (u % 6) * 4 + rng.integers(0, 4))} for u in users]


@pytest.mark.parametrize("make", [
    lambda s: TwoTowerTrainer(s, SLOTS, ITEMS, user_dim=8, learning_rate=0.02),
    lambda s: DeepRetrievalTrainer(s, SLOTS, ITEMS, depth=2, width=4, beam=4, paths_per_item=1, alpha=0.0,
                                   user_dim=8, learning_rate=0.02),
], ids=["two_tower", "deep_retrieval"])
def test_step_returns_gradients_and_training_finds_each_users_items(make):
    src = source()
    trainer = make(src)
    batch = pairs(64, seed=0)
    users = np.unique([e["sparse"]["user"][0] for e in batch]).astype(np.uint64)
    before = src.pull("user_id", users, insert=True).copy()
    _, grads = trainer.step(batch)
    ids, g = grads["user_id"]
    np.testing.assert_array_equal(ids, users)
    assert g.shape == (len(users), 8) and np.abs(g).sum() > 0
    np.testing.assert_array_equal(src.pull("user_id", users), before)  # step does not push
    push_gradients(src, grads)
    assert not np.array_equal(src.pull("user_id", users), before)
    for epoch in range(8):
        for start in range(0, 1200, 100):
            trainer.train_batch(pairs(1200, seed=epoch)[start:start + 100])
        if isinstance(trainer, DeepRetrievalTrainer):
            trainer.end_epoch()
    queries = [{"user_id": u, "sparse": {"user": [u]}} for u in range(60)]
    hits = [len(set(top) & {100 + (u % 6) * 4 + j for j in range(4)}) / 4
            for u, (top, _) in zip(range(60), trainer.retrieve(queries, k=4))]
    assert np.mean(hits) > 0.5, np.mean(hits)
