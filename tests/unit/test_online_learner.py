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
    learner = OnlineLearner(loader, train_dense=False, window=500, delayed_feedback="wait")  # final examples
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


def test_the_joiners_cumulative_re_emissions_train_each_task_once():
    from pipelines.online.upgrades import LabelUpgrades

    tasks = ["click", "like", "finish"]
    up = LabelUpgrades(capacity=3)

    def ex(item, click=0, like=0, finish=0, **extra):
        return {"request_id": "r", "item_id": item, "sample_rate": 1.0,
                "labels": {"click": click, "like": like, "finish": finish}, **extra}

    first = up.apply([ex(1, click=1)], tasks)
    assert first == [ex(1, click=1)]  # a new impression trains every task
    [liked] = up.apply([ex(1, click=1, like=1)], tasks)
    assert liked["sample_rates"] == {"click": 0.0, "like": 1.0, "finish": 0.0}  # only the risen task
    assert up.apply([ex(1, click=1, like=1)], tasks) == []  # an exact repeat trains nothing
    assert up.apply([ex(2, sample_rate=0.1)], tasks) == [ex(2, sample_rate=0.1)]
    [late] = up.apply([ex(2, click=1, is_correction=True)], tasks)
    assert late["sample_rates"] == {"click": 1.0, "like": 0.0, "finish": 0.0}  # negative, then corrected
    for item in (3, 4, 5):
        up.apply([ex(item)], tasks)
    assert len(up.trained) == 3 and (("r", 1) not in up.trained)  # bounded, oldest dropped
    up.forget()
    assert up.apply([ex(4, click=1, like=1)], tasks) == [ex(4, click=1, like=1)]  # after a rollback: new


def test_emissions_of_one_impression_in_one_batch_train_once_with_every_label():
    from pipelines.online.upgrades import LabelUpgrades

    tasks = ["click", "like", "finish"]

    def ex(request, item, click=0, like=0, finish=0):
        return {"request_id": request, "item_id": item, "labels": {"click": click, "like": like, "finish": finish}}

    up = LabelUpgrades()
    batch = [ex("a", 1, click=1), ex("a", 2), ex("a", 1, click=1, like=1), {"item_id": 1, "labels": {}},
             ex("b", 1, like=1), ex("a", 1, click=1, like=1, finish=1)]
    out = up.apply(batch, tasks)
    # a's item 1 once, at its last emission, with every label; unkeyed and other keys untouched
    assert out == [ex("a", 2), {"item_id": 1, "labels": {}}, ex("b", 1, like=1), ex("a", 1, 1, 1, 1)]
    assert all("sample_rates" not in e for e in out)  # a new impression: every task trains
    assert up.apply([ex("a", 1, 1, 1, 1)], tasks) == []  # and it is remembered whole
    assert up.coalesce([ex("c", 5, like=1), ex("c", 5, click=1)], tasks) == [ex("c", 5, click=1, like=1)]


def test_an_upgrade_trains_only_its_risen_task(tmp_path):
    loader = trained_loader(tmp_path)
    learner = OnlineLearner(loader, window=500)
    source = loader.current.ranker.source
    e = examples(1, 3)[0]
    e.update(request_id="q", labels={"click": 1, "like": 0, "finish": 0})
    learner.step([e], source)
    grads = learner.step([{**e, "labels": {"click": 1, "like": 1, "finish": 0}}], source)
    assert grads and learner.examples == 2
    assert learner.step([{**e, "labels": {"click": 1, "like": 1, "finish": 0}}], source) == {}


def test_online_steps_are_sized_as_in_the_daily_retrain(tmp_path):
    loader = trained_loader(tmp_path)
    source = loader.current.ranker.source
    batch = examples(16, 7)
    plain = OnlineLearner(loader, window=500, delayed_feedback="wait").step(batch, source)
    scaled = OnlineLearner(loader, window=500, reference_batch=64, delayed_feedback="wait").step(batch, source)
    for table, (ids, grads) in plain.items():
        np.testing.assert_array_equal(scaled[table][0], ids)
        np.testing.assert_allclose(scaled[table][1], grads * 16 / 64, rtol=1e-5, atol=1e-8)


def test_a_users_own_rows_keep_the_full_step(tmp_path):
    loader = trained_loader(tmp_path)
    source = loader.current.ranker.source
    batch = examples(16, 8)
    plain = OnlineLearner(loader, window=500, delayed_feedback="wait").step(batch, source)
    scaled = OnlineLearner(loader, window=500, reference_batch=64, personal_tables=("user_id",),
                           delayed_feedback="wait").step(batch, source)
    np.testing.assert_allclose(scaled["user_id"][1], plain["user_id"][1], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(scaled["item_id"][1], plain["item_id"][1] * 16 / 64, rtol=1e-5, atol=1e-8)
