"""Online learning step: both models' row gradients merged per table, dense weights frozen
against the champion's, progressive validation (scored before trained)."""

import numpy as np

from models.sparse import merge_gradients, push_gradients
from pipelines.online.learner import OnlineLearner
from tests.serving_models import examples, trained_loader


def test_step_merges_gradients_keeps_dense_frozen_and_validates_progressively(tmp_path):
    loader = trained_loader(tmp_path)
    model = loader.current
    dense_before = [w.copy() for w in model.ranker.model.get_weights()]
    learner = OnlineLearner(loader, train_dense=False, window=500)
    source = model.ranker.source
    item_rows = None
    for seed in range(10, 14):
        batch = examples(64, seed)
        grads = learner.step(batch, source)
        assert {"user_id", "item_id"} <= set(grads)
        ids, g = grads["item_id"]
        assert len(ids) == len(np.unique(ids)) and g.shape == (len(ids), 8)  # one row per ID
        item_rows = source.pull("item_id", ids).copy()
        push_gradients(source, grads)
    assert not np.allclose(source.pull("item_id", ids), item_rows)  # embeddings learn
    for before, after in zip(dense_before, model.ranker.model.get_weights()):
        np.testing.assert_array_equal(before, after)  # the champion's dense graph is untouched
    metrics = learner.metrics()
    assert metrics["examples"] == 256 and 0 <= metrics["rolling_auc_click"] <= 1
    assert len(learner.recent) == 256


def test_training_dense_online_is_a_choice(tmp_path):
    loader = trained_loader(tmp_path)
    before = [w.copy() for w in loader.current.ranker.model.get_weights()]
    OnlineLearner(loader, train_dense=True).step(examples(64, 1), loader.current.ranker.source)
    assert any(not np.array_equal(b, a) for b, a in zip(before, loader.current.ranker.model.get_weights()))


def test_merged_gradients_sum_per_id():
    a = {"t": (np.array([1, 2], np.uint64), np.ones((2, 2), np.float32))}
    b = {"t": (np.array([2, 3], np.uint64), np.full((2, 2), 2.0, np.float32)), "u": (np.array([9], np.uint64), np.ones((1, 2)))}
    merged = merge_gradients(a, b)
    np.testing.assert_array_equal(merged["t"][0], [1, 2, 3])
    np.testing.assert_array_equal(merged["t"][1], [[1, 1], [3, 3], [2, 2]])
    assert merged["u"][0].tolist() == [9]
