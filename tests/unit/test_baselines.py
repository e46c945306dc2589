"""The baselines and the top-K metrics on cases small enough to compute by hand."""

import math

import numpy as np
import pytest

from models.baselines import EASE, MostPopular
from models.evaluation import flat, top_k_metrics


def test_most_popular_counts_the_trailing_window_and_breaks_ties_by_all_of_training():
    items = [1, 1, 1, 2, 2, 3, 3, 4]
    times = [0, 0, 0, 9, 9, 9, 10, 10]
    pop = MostPopular(window_s=1).fit(items, times)  # window [9, 10]: 2 x2, 3 x2, 4 x1, 1 x0
    assert pop.recommend(10) == [2, 3, 4, 1]  # 2 and 3 tie in the window and overall: smaller ID
    assert pop.recommend(2, exclude={2}) == [3, 4]
    assert pop.score([3, 1, 99]).tolist() == [2.0, 0.0, 0.0]
    assert MostPopular().fit(items).recommend(2) == [1, 2]  # no window: all of training


def test_most_popular_refuses_what_it_cannot_count():
    with pytest.raises(ValueError, match="no interactions"):
        MostPopular().fit([])
    with pytest.raises(ValueError, match="needs the interactions' times"):
        MostPopular(window_s=5).fit([1, 2])


def test_ease_weights_match_the_closed_form():
    # users: 0 {10, 20}, 1 {10, 20}, 2 {20, 30}; Gram G = X^T X, P = (G + l2 I)^-1
    users, items = [0, 0, 1, 1, 2, 2], [10, 20, 10, 20, 20, 30]
    model = EASE(l2=1.0).fit(users, items)
    x = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1]], float)
    p = np.linalg.inv(x.T @ x + np.eye(3))
    want = -p / np.diag(p)
    np.fill_diagonal(want, 0)
    np.testing.assert_allclose(model.weights, want, rtol=1e-5)
    # user 2 saw 20 and 30: 10's score is B[20,10] + B[30,10] > 0 (10 co-occurs with 20)
    assert model.recommend(2, 1, exclude={20, 30}) == [10]
    assert model.scores(2)[0] == pytest.approx(want[1, 0] + want[2, 0], rel=1e-5)


def test_ease_serves_a_user_without_history_the_popularity_order():
    model = EASE(l2=1.0).fit([0, 0, 1, 1, 2, 2], [10, 20, 10, 20, 20, 30])
    assert model.recommend(99, 3) == [20, 10, 30]


def test_ease_refuses_a_catalogue_beyond_its_limit():
    with pytest.raises(ValueError, match="max_items is 2"):
        EASE(max_items=2).fit([0, 0, 0], [1, 2, 3])


def test_top_k_metrics_by_hand():
    # user 7 (warm, saw 1): retrieves [1, 2, 3, 4]; test items {2, 9}
    #   excluded: list [2, 3] (1 dropped), hits {2} at rank 0 -> recall 1/2, precision 1/2,
    #     ndcg = 1 / (1 + 1/log2(3))
    #   raw: list [1, 2], test items {2, 9}: hit 2 at rank 1 -> recall 1/2, ndcg (1/log2 3) / (1 + 1/log2 3)
    # user 8 (cold): retrieves [5, 6, 7, 8]; test items {6} -> rank 1 both ways: recall 1, precision 1/2
    lists = {7: [1, 2, 3, 4], 8: [5, 6, 7, 8]}
    asked = {}

    def retrieve(user, n):
        asked[user] = n
        return lists[user][:n], 4

    got = top_k_metrics(retrieve, {7: {2, 9}, 8: {6}}, {7: {1}}, k=2, n_items=8)
    assert asked == {7: 3, 8: 2}  # k plus what the user has seen
    third = 1 / math.log2(3)
    warm, cold = got["warm"], got["cold"]
    assert warm["recall@2"] == 0.5 and warm["precision@2"] == 0.5
    assert warm["ndcg@2"] == pytest.approx(1 / (1 + third))
    assert warm["recall@2_raw"] == 0.5 and warm["ndcg@2_raw"] == pytest.approx(third / (1 + third))
    assert cold["recall@2"] == 1.0 and cold["precision@2"] == 0.5 and cold["ndcg@2"] == pytest.approx(third)
    assert got["all"]["recall@2"] == 0.75 and got["all"]["users"] == 2 and got["all"]["share_scored"] == 0.5
    assert flat(got)["recall_at_2_cold"] == 1.0 and flat(got)["ndcg_at_2_raw_warm"] == pytest.approx(third / (1 + third))


def test_a_user_whose_test_items_were_all_seen_counts_only_unexcluded():
    got = top_k_metrics(lambda user, n: ([3, 4, 5][:n], 3), {1: {3}}, {1: {3}}, k=1, n_items=10)
    assert got["all"]["users"] == 1 and got["all"]["recall@1_raw"] == 1.0 and np.isnan(got["all"]["recall@1"])
    assert got["cold"]["users"] == 0 and np.isnan(got["cold"]["recall@1_raw"])
