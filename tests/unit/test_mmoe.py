"""MMoE ranker over slot embeddings: gates, the position-bias tower, sample-rate weighting,
and training through in-process tables and through the PS client (same model code)."""

import threading

import numpy as np
import pytest

import models  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from models.mmoe import MMoE, task_weights, weighted_loss
from models.ranking import RankingTrainer
from models.sparse import LocalTables, Slot, SparseBatch
from paramserver.client import PSClient
from paramserver.config import Adagrad, TableConfig
from paramserver.server import ParamServer
from paramserver.table import EmbeddingTable

TASKS = ("click", "like", "finish")
SLOTS = [Slot("user", "user_id"), Slot("item", "item_id"), Slot("history", "item_id")]


def tables() -> dict[str, EmbeddingTable]:
    return {name: EmbeddingTable(TableConfig(name=name, dim=8, optimizer=Adagrad(learning_rate=0.3), seed=3))
            for name in ("user_id", "item_id")}


def examples(n: int, seed: int) -> list[dict]:
    """Users like items of their own residue mod 3; history is a few items they clicked."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        u, i = int(rng.integers(0, 60)), int(rng.integers(0, 60))
        liked = int(u % 3 == i % 3)
        history = [int(h) for h in rng.integers(0, 20, size=int(rng.integers(0, 4))) * 3 + u % 3]
        out.append({"sparse": {"user": [u], "item": [1000 + i], "history": [1000 + h for h in history]},
                    "dense": {"age": (u % 7) / 7}, "position": int(rng.integers(0, 40)),
                    "labels": {"click": liked, "like": liked * int(i % 2 == 0), "finish": liked},
                    "sample_rate": 1.0})
    return out


def trainer(source, seed: int = 7) -> RankingTrainer:
    keras.utils.set_random_seed(seed)
    model = MMoE(tasks=TASKS, num_experts=3, expert_units=(16,), tower_units=(8,))
    return RankingTrainer(model, SLOTS, ["age"], source, keras.optimizers.Adam(learning_rate=0.01))


def test_gates_are_softmaxes_over_the_experts():
    model = MMoE(tasks=TASKS, num_experts=5)
    x = tf.random.normal((16, 12))
    for gate in model.gate_weights(x).values():
        assert gate.shape == (16, 5)
        np.testing.assert_allclose(tf.reduce_sum(gate, axis=1).numpy(), np.ones(16), rtol=1e-5)


def test_position_bias_counts_in_training_and_is_dropped_at_serving():
    model = MMoE(tasks=TASKS)
    x = tf.random.normal((4, 6))
    model({"features": x, "position": tf.zeros(4, tf.int32)}, training=True)
    model.bias_tower.set_weights([np.arange(32 * 3, dtype=np.float32).reshape(32, 3)])
    near, far = ({"features": x, "position": tf.fill([4], p)} for p in (0, 5))
    trained = [model(i, training=True)["like"].numpy() for i in (near, far)]
    np.testing.assert_allclose(trained[1] - trained[0], np.full(4, 15.0), rtol=1e-5)  # bias[5,1] - bias[0,1]
    served = [model.predict_scores(i)["like"].numpy() for i in (near, far)]
    np.testing.assert_array_equal(served[0], served[1])
    np.testing.assert_allclose(served[0], tf.sigmoid(model(near, training=False)["like"]).numpy(), rtol=1e-6)


def test_sampled_negatives_weigh_one_over_their_rate():
    logits = {"click": tf.constant([0.0, 0.0])}
    labels = {"click": tf.constant([1.0, 0.0])}
    ce = np.log(2.0)  # cross-entropy of logit 0 either way
    weights = task_weights([{"sample_rate": 1.0}, {"sample_rate": 1.0}], ["click"])
    assert float(weighted_loss(logits, labels, weights)) == pytest.approx(ce)
    # the same value, but the kept negative stands for 4: a positive loss term would weigh 1/5
    logits = {"click": tf.constant([2.0, 0.0])}
    weights = task_weights([{"sample_rate": 1.0}, {"sample_rate": 0.25}], ["click"])
    got = float(weighted_loss(logits, labels, weights))
    want = (np.log1p(np.exp(-2.0)) * 1 + ce * 4) / 5
    assert got == pytest.approx(want, rel=1e-5)


def test_per_task_rates_weigh_each_task_and_rate_zero_leaves_a_task_out():
    negative = {"labels": {"click": 0, "like": 0}, "sample_rate": 0.5, "sample_rates": {"click": 0.0, "like": 0.5}}
    weights = task_weights([{"sample_rate": 1.0}, negative], ["click", "like"])
    np.testing.assert_array_equal(weights["click"], [1.0, 0.0])
    np.testing.assert_array_equal(weights["like"], [1.0, 2.0])
    logits = {"click": tf.constant([0.0, 5.0]), "like": tf.constant([0.0, 0.0])}
    labels = {"click": tf.constant([1.0, 0.0]), "like": tf.constant([1.0, 0.0])}
    # click: only the first example counts (the second's huge wrong logit is ignored)
    assert float(weighted_loss(logits, labels, weights)) == pytest.approx(2 * np.log(2.0), rel=1e-5)
    # a task with no weight in the batch adds nothing (no NaN)
    empty = {"click": np.zeros(2, np.float32), "like": np.ones(2, np.float32)}
    assert float(weighted_loss(logits, labels, empty)) == pytest.approx(np.log(2.0), rel=1e-5)


def test_embeddings_are_mean_pooled_and_empty_slots_are_zero():
    batch = SparseBatch.from_examples([{"sparse": {"history": [5, 6]}}, {"sparse": {}}],
                                      [Slot("history", "item_id")])
    np.testing.assert_array_equal(batch.unique["item_id"], [5, 6])
    rows = {"item_id": tf.constant([[1.0, 2.0], [3.0, 6.0]])}
    np.testing.assert_allclose(batch.embed(rows)["history"].numpy(), [[2.0, 4.0], [0.0, 0.0]])


def test_training_loss_falls_and_the_item_rows_learn():
    local = LocalTables(tables())
    t = trainer(local)
    data = examples(3000, seed=1)
    losses = []
    for _ in range(4):
        losses += [t.train_batch(data[i:i + 100]) for i in range(0, 3000, 100)]
    # below what the label frequencies alone give (the best constant predictor)
    rates = {task: np.mean([e["labels"][task] for e in data]) for task in TASKS}
    entropy = sum(-p * np.log(p) - (1 - p) * np.log(1 - p) for p in rates.values())
    assert np.mean(losses[-10:]) < 0.8 * entropy < np.mean(losses[:10]), (entropy, losses[:10], losses[-10:])
    assert (len(local.tables["user_id"]), len(local.tables["item_id"])) == (60, 60)  # one row per ID
    held_out = examples(500, seed=2)
    scores = t.score([{k: v for k, v in e.items() if k != "labels"} for e in held_out])["click"]  # as served
    labels = np.array([e["labels"]["click"] for e in held_out])
    assert scores[labels == 1].mean() > scores[labels == 0].mean() + 0.1


def test_the_same_model_trains_identically_from_local_tables_and_from_the_ps_client():
    data = examples(600, seed=4)
    local = trainer(LocalTables(tables()))
    want = [local.train_batch(data[i:i + 100]) for i in range(0, 600, 100)]

    server = ParamServer("grpc+tcp://127.0.0.1:0", tables(), "training", 0, 1)
    threading.Thread(target=server.serve, daemon=True).start()
    client = PSClient([f"grpc+tcp://127.0.0.1:{server.port}"], {"user_id": 8, "item_id": 8})
    try:
        remote = trainer(client)
        got = [remote.train_batch(data[i:i + 100]) for i in range(0, 600, 100)]
    finally:
        client.close()
        server.shutdown()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[-1] < got[0]


def test_sparse_batch_from_columns_equals_from_examples_and_refuses_ragged_columns():
    slots = [Slot("history", "item_id"), Slot("item", "item_id")]
    examples = [{"sparse": {"history": [5, 6], "item": [6]}}, {"sparse": {"item": [9]}}]
    a = SparseBatch.from_examples(examples, slots)
    b = SparseBatch.from_columns(2, slots, {"history": (np.array([5, 6]), np.array([0, 0])),
                                            "item": (np.array([6, 9]), np.array([0, 1]))})
    assert a.unique["item_id"].tolist() == b.unique["item_id"].tolist() == [5, 6, 9]
    for slot in ("history", "item"):
        assert [x.tolist() for x in a.index[slot]] == [x.tolist() for x in b.index[slot]]
    with pytest.raises(ValueError, match="2 IDs but 1 example"):
        SparseBatch.from_columns(2, slots, {"item": (np.array([6, 9]), np.array([0]))})
