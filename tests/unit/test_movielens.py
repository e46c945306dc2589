"""MovieLens loading (both layouts, generated here), time split, examples; evaluation metrics."""

import numpy as np
import pytest

from models.evaluation import auc_per_task, recall_precision_at_k
from models.movielens import GENRE_BASE, examples, load, time_split


def write_100k(folder):
    rows = [(1, 10, 5, 100), (1, 11, 3, 200), (2, 10, 4, 300), (2, 12, 1, 400), (3, 11, 4, 500)]
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    genres = {10: [0, 3], 11: [1], 12: [18]}
    (folder / "u.item").write_text("".join(
        f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|" + "|".join("1" if g in gs else "0" for g in range(19)) + "\n"
        for i, gs in genres.items()))
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n3|33|M|writer|1\n")


def test_ml_100k_layout_loads_sorted_by_time_with_genres_and_users(tmp_path):
    write_100k(tmp_path)
    data = load(tmp_path)
    assert list(data.ratings["time"]) == sorted(data.ratings["time"])
    assert data.genres[10] == [GENRE_BASE, GENRE_BASE + 3] and data.genres[12] == [GENRE_BASE + 18]
    assert len(data.users[2]) == 3 and data.users[1] != data.users[2]
    np.testing.assert_array_equal(data.items, [10, 11, 12])


def test_ratings_csv_layout_loads(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,5,4.5,20\n2,6,2.0,10\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n5,A,Drama|Comedy\n6,B,Comedy\n")
    data = load(tmp_path)
    assert list(data.ratings["user"]) == [2, 1]  # by time
    assert data.genres[6] == [data.genres[5][1]]


def test_a_folder_without_ratings_is_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither u.data"):
        load(tmp_path)


def test_time_split_never_puts_a_test_rating_before_a_training_one(tmp_path):
    write_100k(tmp_path)
    train, test = time_split(load(tmp_path).ratings, 0.4)
    assert train["time"].max() < test["time"].min() and len(train) + len(test) == 5


def test_examples_label_ratings_add_unrated_negatives_and_carry_history(tmp_path):
    write_100k(tmp_path)
    data = load(tmp_path)
    ex = examples(data, data.ratings, negatives=2, sample_rate=0.5, seed=1)
    positives = [e for e in ex if e["labels"]["click"]]
    assert len(positives) == 5
    first = positives[0]
    assert first["labels"] == {"click": 1, "like": 1, "finish": 1} and first["sparse"]["history"] == []
    later = [e for e in positives if e["user_id"] == 1][1]
    assert later["sparse"]["history"] == [10] and later["labels"]["like"] == 0
    for e in ex:
        if not e["labels"]["click"]:
            assert e["sample_rate"] == 0.5 and e["item_id"] not in e["sparse"]["history"]


def test_auc_and_recall_precision():
    auc = auc_per_task({"click": np.array([0, 0, 1, 1]), "like": np.ones(4)},
                       {"click": np.array([0.1, 0.4, 0.35, 0.8]), "like": np.zeros(4)})
    assert auc["click"] == 0.75 and np.isnan(auc["like"])
    got = recall_precision_at_k(lambda user, k: ([1, 2, 3][:k], 10), {7: {1, 9}, 8: {3}}, k=2, n_items=100)
    assert got == {"recall@2": 0.25, "precision@2": 0.25, "share_scored": 0.1, "users": 2}
