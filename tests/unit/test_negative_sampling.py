"""Spark negative sampling on local Spark and local Parquet: per-task rates nested in the online
ones, popularity-drawn retrieval negatives with log q, idempotent day partitions."""

import os
import sys
from datetime import date

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from flywheel.paths import REPO_ROOT
from datasets import load
from datasets.movielens_sample import write_movielens
from pipelines.batch.backfill import example_rows, write_partitions
from pipelines.batch.negative_sampling import popularity, run
from streaming.sampling import uniform


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # Python workers: this environment, with numpy
    os.environ["PYTHONPATH"] = str(REPO_ROOT)
    session = (SparkSession.builder.master("local[1]").appName("test-negative-sampling")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
               .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
               .getOrCreate())
    yield session
    session.stop()


@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    root = tmp_path_factory.mktemp("landed")
    data = load(write_movielens(root / "ml", users=30, items=40, ratings_per_user=12, days=2))
    rows = example_rows(data, date(2026, 11, 23), days=2, negatives=4)
    write_partitions(fsspec.filesystem("file"), str(root / "examples"), rows)
    return root, rows


def uri(path) -> str:
    """A file:// URI: a Spark session of another test may have made HDFS the default filesystem."""
    return f"file://{path}"


def read(folder) -> list[dict]:
    return pq.read_table(str(folder)).to_pylist()


def test_negatives_are_kept_per_task_and_clicks_get_popularity_negatives(spark, landed):
    root, rows = landed
    out = root / "training"
    rates = {"click": 0.5, "like": 1.0, "finish": 0.25, "share": 0.25}
    stats = run(spark, uri(root / "examples"), uri(out), ["2026-11-22", "2026-11-23"], rates, k=3)
    got = read(out)
    assert stats["rows_out"] == len(got) and stats["rows_in"] == len(rows)
    positives = [r for r in got if r["labels"]["click"]]
    negatives = [r for r in got if not any(r["labels"].values())]
    assert len(positives) == sum(1 for labels in rows["labels"] if labels["click"])  # never sampled
    n_neg_in = len(rows) - len(positives)
    assert len(negatives) == n_neg_in  # like keeps rate 1: every negative is kept for like
    for r in negatives:
        u = uniform(f"{r['request_id']}|{r['item_id']}")
        assert r["sample_rates"] == {t: (rate if u < rate else 0.0) for t, rate in rates.items()}
        assert r["sample_rate"] == 1.0 and r["retrieval_negatives"] is None
    assert abs(stats["kept_for"]["finish"] - len(positives) - 0.25 * n_neg_in) < 0.1 * n_neg_in
    for r in positives:
        assert len(r["retrieval_negatives"]) == 3 and len(r["retrieval_log_q"]) == 3
        assert all(q < 0 for q in r["retrieval_log_q"]) and r["item_log_q"] < 0
        assert r["sample_rates"] == {"click": 1.0, "like": 1.0, "finish": 1.0, "share": 1.0}


def test_a_rerun_replaces_only_its_days(spark, landed):
    root, _ = landed
    out = root / "training-rerun"
    run(spark, uri(root / "examples"), uri(out), ["2026-11-22", "2026-11-23"], dict.fromkeys(["click", "like", "finish", "share"], 1.0), k=1)
    before = {d: len(read(out / f"dt={d}")) for d in ("2026-11-22", "2026-11-23")}
    run(spark, uri(root / "examples"), uri(out), ["2026-11-23"], dict.fromkeys(["click", "like", "finish", "share"], 1.0), k=1)
    after = {d: len(read(out / f"dt={d}")) for d in ("2026-11-22", "2026-11-23")}
    assert before == after  # no duplicates, the other day untouched


def test_popularity_follows_clicks_to_the_three_quarters():
    items, cdf, log_q = popularity(np.array([30, 10, 20]), np.array([1, 16, 81]))
    np.testing.assert_array_equal(items, [10, 20, 30])
    q = np.exp(log_q)
    assert q[0] / q[2] == pytest.approx(8.0) and q[1] / q[2] == pytest.approx(27.0) and cdf[-1] == pytest.approx(1.0)


def test_missing_days_fail_clearly(spark, landed):
    root, _ = landed
    with pytest.raises(Exception, match="2026-01-01"):
        run(spark, uri(root / "examples"), uri(root / "never"), ["2026-01-01"], {"click": 1.0}, k=1)
