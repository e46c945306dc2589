"""Backfill: a history (MovieLens through its adapter) -> landed example partitions (schema, time moves, idempotent days)."""

from datetime import date

import fsspec
import pyarrow.parquet as pq
import pytest

from datasets import load
from datasets.movielens_sample import write_movielens
from pipelines.batch.backfill import SCHEMA, example_rows, retime, write_partitions
from streaming.schemas import Example


@pytest.fixture
def data(tmp_path):
    return load(write_movielens(tmp_path, users=20, items=30, ratings_per_user=10, days=20))


def test_history_moves_to_end_on_the_date_and_squeezes_into_days(data):
    moved = retime(data.events, date(2026, 11, 23), days=4)
    assert moved["time"].max() == 1_795_478_399  # 2026-11-23T23:59:59Z
    assert moved["time"].max() - moved["time"].min() < 4 * 86400
    assert list(moved["time"]) == sorted(moved["time"])


def test_rows_are_valid_examples_in_their_hour(data):
    rows = example_rows(data, date(2026, 11, 23), days=4, negatives=2)
    assert set(rows["dt"]) <= {f"2026-11-{d}" for d in (20, 21, 22, 23)}
    positives = rows[[labels["click"] == 1 for labels in rows["labels"]]]
    assert len(positives) == len(data.events) and len(rows) <= 3 * len(data.events)
    for _, row in rows.head(50).iterrows():
        Example.model_validate({**{k: row[k] for k in Example.model_fields if k not in ("sparse", "dense", "provisional")},
                                "sparse": dict(row["sparse"]), "dense": dict(row["dense"])}, strict=False)


def test_days_are_replaced_whole_and_read_back(data):
    fs = fsspec.filesystem("memory")
    root = "/bf-test/examples"
    rows = example_rows(data, date(2026, 11, 23), days=2, negatives=1)
    first = write_partitions(fs, root, rows)
    again = write_partitions(fs, root, rows)  # a re-run replaces, never appends
    assert first == again and sum(first.values()) == len(rows)
    files = fs.glob(f"{root}/dt=*/hour=*/backfill.parquet")
    assert all(fs.exists(f.rsplit("/", 1)[0] + "/_SUCCESS") for f in files)
    total = sum(pq.read_table(fs.open(f, "rb")).num_rows for f in files)
    assert total == len(rows) and pq.read_table(fs.open(files[0], "rb")).schema.equals(SCHEMA)
    assert not fs.exists(f"{root}/_staging") or not fs.ls(f"{root}/_staging")


def test_a_history_with_impressions_lands_them_as_its_negatives(tmp_path):
    """The synthetic world logs impressions: each is one example, and no item is drawn."""
    from datasets.synthetic import write_world

    world = load(write_world(tmp_path / "world", users=30, items=60, days=3, seed=2))
    rows = example_rows(world, date(2026, 11, 23), days=3, negatives=4)
    assert world.has_impressions and len(rows) == len(world.events)
    shown = set(zip(world.events["user"], world.events["item"]))
    assert set(zip(rows["user_id"], rows["item_id"])) == shown
    positives = [any(labels.values()) for labels in rows["labels"]]
    assert sum(positives) == len(world.engaged) < len(rows) / 3
    assert set(rows["request_id"]) == {f"bf-{r}" for r in world.events["request"]}
