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


def test_the_popularity_prior_orders_the_beams_items_and_its_weight_scales_it():
    from models.sparse import LocalTables

    src = LocalTables({n: EmbeddingTable(TableConfig(name=n, dim=4, optimizer=Adagrad(0.1))) for n in ("user_id",)})
    items = np.arange(100, 110)
    trainer = DeepRetrievalTrainer(src, [Slot("user", "user_id")], items, depth=1, width=2, beam=2, prior_weight=2.0)
    logits = np.zeros(len(items), np.float32)
    beams = np.array([[0], [1]])  # both paths: every item is a candidate
    counts = np.zeros(len(items))
    counts[7] = np.e - 1  # log(1 + count) = 1
    trainer.set_popularity(counts)
    assert trainer.prior[7] == pytest.approx(2.0) and trainer.prior.sum() == pytest.approx(2.0)
    log_probs = np.log([0.5, 0.5])
    top, scored, _ = trainer.candidates_of(logits, beams, log_probs, k=3)
    assert top[0] == 107 and scored == len(items)
    logits[3] = 2.5  # the user's own score beats the prior
    assert trainer.candidates_of(logits, beams, log_probs, k=1)[0] == [103]
    with pytest.raises(ValueError, match="for \\(3,\\) items; the catalogue has 10"):
        trainer.set_popularity(np.zeros(3))


def test_the_path_prior_keeps_the_pools_paths_that_hold_what_is_popular():
    from models.sparse import LocalTables

    src = LocalTables({n: EmbeddingTable(TableConfig(name=n, dim=4, optimizer=Adagrad(0.1))) for n in ("user_id",)})
    items = np.arange(4)
    trainer = DeepRetrievalTrainer(src, [Slot("user", "user_id")], items, depth=1, width=4, beam=1, paths_per_item=1,
                                   prior_weight=1.0, beam_pool=4)
    trainer.paths.item_paths = np.arange(4).reshape(4, 1, 1).astype(np.int32)  # item n on path (n,)
    trainer.paths._index()
    pool, log_probs = np.array([[0], [1], [2], [3]]), np.log([0.4, 0.3, 0.2, 0.1])
    assert trainer.search_beam == 1 and trainer.select_paths(pool, log_probs).tolist() == [[0]]  # no prior yet
    trainer.set_popularity(np.array([0, 0, 0, 20.0]))  # log 0.1 + log 21 beats log 0.4
    assert trainer.search_beam == 4 and trainer.path_prior[(3,)] == pytest.approx(np.log(21))
    assert trainer.select_paths(pool, log_probs).tolist() == [[3]]
    assert trainer.candidates_of(np.zeros(4), pool, log_probs, k=5)[:2] == ([3], 1)  # only the kept path's items
