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
from pipelines.batch.retrain import RetrainParams, fingerprint


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
