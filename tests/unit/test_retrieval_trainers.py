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


def test_sampled_softmax_over_every_other_item_with_uniform_q_is_the_full_softmax():
    import tensorflow as tf

    trainer = DeepRetrievalTrainer(source(), SLOTS, ITEMS, depth=2, width=4, beam=4, user_dim=8)
    user = tf.random.normal((3, 8), seed=1)
    items = np.array([0, 5, 23])
    trainer.model.rerank_logits(user)  # builds the reranker
    full = float(trainer.model.rerank_loss(user, items))
    others = np.array([[j for j in range(len(ITEMS)) if j != i] + [i, -1] for i in items])  # + a hit, an unknown
    log_q = np.full(others.shape, np.log(1 / 24), np.float32)
    sampled = float(trainer.model.sampled_rerank_loss(user, items, others, np.full(3, np.log(1 / 24), np.float32), log_q))
    assert sampled == pytest.approx(full, rel=1e-5)


def test_deep_retrieval_learns_from_popularity_sampled_negatives():
    trainer = DeepRetrievalTrainer(source(), SLOTS, ITEMS, depth=2, width=4, beam=4, paths_per_item=1, alpha=0.0,
                                   user_dim=8, learning_rate=0.02)
    rng = np.random.default_rng(3)

    def with_negatives(batch):
        return [{**e, "retrieval_negatives": [int(i) for i in rng.choice(ITEMS, 6)],
                 "retrieval_log_q": [float(np.log(1 / 24))] * 6, "item_log_q": float(np.log(1 / 24))} for e in batch]

    for epoch in range(8):
        for start in range(0, 1200, 100):
            trainer.train_batch(with_negatives(pairs(1200, seed=epoch)[start:start + 100]))
        trainer.end_epoch()
    queries = [{"user_id": u, "sparse": {"user": [u]}} for u in range(60)]
    hits = [len(set(top) & {100 + (u % 6) * 4 + j for j in range(4)}) / 4
            for u, (top, _) in zip(range(60), trainer.retrieve(queries, k=4))]
    assert np.mean(hits) > 0.5, np.mean(hits)
