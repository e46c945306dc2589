"""Retrain planning pieces that need no stack: day ranges, params, data fingerprints, the
weighted AUC, reading partitions from any fsspec filesystem."""

import io

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.evaluation import auc_per_task
from pipelines.batch.datasets import day_range, landed_days, read_days
from pipelines.batch.publish import beats_popularity
from pipelines.batch.retrain import RetrainParams, baseline_figures, fingerprint


def test_training_days_end_the_day_before_the_evaluation_day():
    assert day_range("2026-03-02", 3) == ["2026-02-27", "2026-02-28", "2026-03-01"]


def test_params_are_checked():
    for bad, words in (({"mode": "hot"}, "warm or scratch"), ({"epochs": 0}, ">= 1"), ({"train_days": 0}, ">= 1")):
        with pytest.raises(ValueError, match=words):
            RetrainParams(date="2026-01-02", **bad)


def test_fingerprint_follows_the_examples_not_their_order():
    a = {"request_id": "r1", "item_id": 1, "labels": {"click": 1}}
    b = {"request_id": "r2", "item_id": 2, "labels": {"click": 0}}
    assert fingerprint({"d": [a, b]}) == fingerprint({"d": [b, a]})
    assert fingerprint({"d": [a, b]}) != fingerprint({"d": [a]})
    assert fingerprint({"d": [a, b]}) != fingerprint({"d": [a, {**b, "labels": {"click": 1}}]})


def test_weights_give_the_unsampled_auc_and_zero_weight_leaves_an_example_out():
    labels = {"click": np.array([1, 0, 0, 1])}
    scores = {"click": np.array([0.9, 0.8, 0.1, 0.2])}
    # unweighted: pairs (0.9>0.8, 0.9>0.1, 0.2<0.8, 0.2>0.1) -> 3/4
    assert auc_per_task(labels, scores)["click"] == pytest.approx(0.75)
    # the 0.8 negative stands for 3: (3 + 1 + 0 + 1) / (2 * 4)
    weights = {"click": np.array([1.0, 3.0, 1.0, 1.0])}
    assert auc_per_task(labels, scores, weights)["click"] == pytest.approx(5 / 8)
    assert auc_per_task(labels, scores, {"click": np.array([1.0, 0.0, 1.0, 1.0])})["click"] == pytest.approx(1.0)


def test_partitions_read_back_as_example_dicts():
    fs, root = fsspec.filesystem("memory"), "/retrain-test/training"
    table = pa.table({"request_id": ["r1"], "item_id": [5], "sparse": pa.array([[("item", [5])]],
                      pa.map_(pa.string(), pa.list_(pa.int64()))), "dense": pa.array([[]], pa.map_(pa.string(), pa.float64()))})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    fs.pipe_file(f"{root}/dt=2026-01-02/part-0.parquet", buffer.getvalue())
    fs.pipe_file(f"{root}/dt=2026-01-02/_SUCCESS", b"")
    assert landed_days(fs, root, ["2026-01-01", "2026-01-02"]) == {"2026-01-01": 0, "2026-01-02": 1}
    days = read_days(fs, root, ["2026-01-01", "2026-01-02"])
    assert days["2026-01-01"] == [] and days["2026-01-02"] == [
        {"request_id": "r1", "item_id": 5, "sparse": {"item": [5]}, "dense": {}}]


def _row(user, item, t_h, click, rate=1.0):
    return {"user_id": user, "item_id": item, "event_time": int(t_h * 3_600_000), "request_id": f"r{user}-{t_h}",
            "labels": {"click": click}, "sample_rate": rate, "sample_rates": {"click": rate}}


def test_baselines_are_measured_on_the_evaluation_rows_with_seen_items_left_out():
    # training clicks: item 1 three times long ago, item 2 twice and item 3 once in the last 24 h
    train = [_row(1, 1, 0, 1), _row(2, 1, 0, 1), _row(3, 1, 0, 1),
             _row(1, 2, 100, 1), _row(2, 2, 100, 1), _row(3, 3, 101, 1), _row(3, 4, 101, 0)]
    # evaluation day: user 1 clicks 3, skips 4; user 9 (cold) clicks 1
    rows = [_row(1, 3, 125, 1), _row(1, 4, 125, 0), _row(9, 1, 126, 1), _row(9, 2, 126, 0)]
    got = baseline_figures(train, rows, ["click"], k=1, n_items=4, window_h=24, ease_max_items=100)
    # popularity in the window: 2 (2 clicks), 3 (1), then 1 (0 in the window, 3 overall)
    # user 1 saw {1, 2}: list [3] -> hit; user 9 (cold): list [2] -> miss; raw for user 1: [2] -> miss
    assert got["popularity_recall_at_1"] == 0.5 and got["popularity_recall_at_1_warm"] == 1.0
    assert got["popularity_recall_at_1_cold"] == 0.0 and got["popularity_recall_at_1_raw"] == 0.0
    # AUC of the window counts as scores: positives 3 (1) and 1 (0), negatives 4 (0) and 2 (2)
    # pairs: 3>4 win, 3<2 loss, 1=4 tie, 1<2 loss -> 1.5 / 4
    assert got["popularity_auc_click"] == pytest.approx(0.375)
    assert "ease_recall_at_1" in got and "ease_recall_at_1" not in baseline_figures(
        train, rows, ["click"], k=1, n_items=4, window_h=24, ease_max_items=2)


def test_a_candidate_must_beat_popularity_on_the_gate_metric():
    assert beats_popularity({"auc_click": 0.61, "popularity_auc_click": 0.60}, "auc_click")[0]
    ok, why = beats_popularity({"auc_click": 0.60, "popularity_auc_click": 0.60}, "auc_click")
    assert not ok and why == "candidate 0.6000 <= popularity 0.6000"
    ok, why = beats_popularity({"auc_click": 0.9}, "auc_click")
    assert not ok and "no popularity_auc_click was measured" in why
    assert not beats_popularity({"auc_click": float("nan"), "popularity_auc_click": 0.5}, "auc_click")[0]
