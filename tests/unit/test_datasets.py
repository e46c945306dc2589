"""The MovieLens adapter (both layouts, generated here) through the contract; the time split;
examples (sampled negatives without impressions, real ones with); evaluation metrics."""

import numpy as np
import pandas as pd
import pytest

from models.evaluation import auc_per_task
from datasets import load
from datasets.contract import DEFAULT_ACTIONS, Tables, finish
from datasets.history import attr_id, examples, from_tables, time_split

T0 = 880_000_000  # unix s, in ml-100k's time


def write_100k(folder):
    rows = [(1, 10, 5, 100), (1, 11, 3, 200), (2, 10, 4, 300), (2, 12, 1, 400), (3, 11, 4, 500)]
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{T0 + t}\n" for u, i, r, t in rows))
    genres = {10: [0, 3], 11: [1], 12: [18]}
    (folder / "u.item").write_text("".join(
        f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|" + "|".join("1" if g in gs else "0" for g in range(19)) + "\n"
        for i, gs in genres.items()))
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n3|33|M|writer|1\n")


def test_ml_100k_layout_loads_sorted_by_time_with_genres_and_users(tmp_path):
    write_100k(tmp_path)
    data = load(tmp_path)
    assert list(data.events["time"]) == sorted(data.events["time"])
    assert data.item_attrs[10] == [attr_id("items", "genre=unknown"), attr_id("items", "genre=Animation")]
    assert [data.attr_names[a] for a in data.item_attrs[12]] == ["genre=Western"]
    assert len(data.user_attrs[2]) == 3 and data.user_attrs[1] != data.user_attrs[2]
    assert data.attr_names[data.user_attrs[2][1]] == "gender=F" and data.titles[11] == "Movie 11 (1995)"
    np.testing.assert_array_equal(data.items, [10, 11, 12])
    labels = data.events[["click", "like", "finish"]].to_numpy().tolist()
    assert labels == [[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0]] and not data.has_impressions


def test_ratings_csv_layout_loads(tmp_path):
    (tmp_path / "ratings.csv").write_text(f"userId,movieId,rating,timestamp\n1,5,4.5,{T0 + 20}\n2,6,2.0,{T0 + 10}\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n5,A,Drama|Comedy\n6,B,Comedy\n")
    data = load(tmp_path)
    assert list(data.events["user"]) == [2, 1]  # by time
    assert data.item_attrs[6] == [data.item_attrs[5][1]]
    assert data.events["like"].tolist() == [0, 1] and data.events["finish"].tolist() == [0, 0]


def test_a_folder_without_ratings_is_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no history"):
        load(tmp_path)


def test_time_split_never_puts_a_test_rating_before_a_training_one(tmp_path):
    write_100k(tmp_path)
    train, test = time_split(load(tmp_path).events, 0.4)
    assert train["time"].max() < test["time"].min() and len(train) + len(test) == 5


def test_examples_label_ratings_add_unrated_negatives_and_carry_history(tmp_path):
    write_100k(tmp_path)
    data = load(tmp_path)
    ex = examples(data, data.events, negatives=2, sample_rate=0.5, seed=1)
    positives = [e for e in ex if e["labels"]["click"]]
    assert len(positives) == 5
    first = positives[0]
    assert first["labels"] == {"click": 1, "like": 1, "finish": 1, "share": 0} and first["sparse"]["history"] == []
    later = [e for e in positives if e["user_id"] == 1][1]
    assert later["sparse"]["history"] == [10] and later["labels"]["like"] == 0
    for e in ex:
        if not e["labels"]["click"]:
            assert e["sample_rate"] == 0.5 and e["item_id"] not in e["sparse"]["history"]


def test_auc_per_task():
    auc = auc_per_task({"click": np.array([0, 0, 1, 1]), "like": np.ones(4)},
                       {"click": np.array([0.1, 0.4, 0.35, 0.8]), "like": np.zeros(4)})
    assert auc["click"] == 0.75 and np.isnan(auc["like"])


def test_impressions_are_the_negatives_when_the_history_has_them():
    """Shown and not acted on: a negative (as the joiner does live), and no item is drawn."""
    items = pd.DataFrame({"item_id": [1, 2, 3, 4], "attributes": ["c=a", "c=b", "", "c=a"]})
    rows = [(7, 1, "impression", 100, "r1", 0), (7, 2, "impression", 100, "r1", 1), (7, 1, "click", 130, "r1", 0),
            (7, 1, "like", 300_000, "r1", 0),  # days-late like on the same request joins the same example
            (7, 3, "impression", 200, "r2", 0), (7, 3, "skip", 210, "r2", 0)]
    rows = [(u, i, a, T0 + t, r, p) for u, i, a, t, r, p in rows]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "action", "timestamp", "request_id", "position"])
    data = from_tables(finish(Tables(items, pd.DataFrame({"user_id": [], "attributes": []}), interactions)),
                       DEFAULT_ACTIONS)
    assert data.has_impressions and len(data.events) == 3
    ex = examples(data, data.events, negatives=5, sample_rate=0.25)
    assert [(e["item_id"], e["labels"]["click"], e["labels"]["like"], e["position"]) for e in ex] == [
        (1, 1, 1, 0), (2, 0, 0, 1), (3, 0, 0, 0)]
    assert [e["sample_rate"] for e in ex] == [1.0, 0.25, 0.25]
    assert ex[2]["sparse"]["history"] == [1]  # engaged items only
    assert ex[0]["request_id"] == ex[1]["request_id"] == "r1"
