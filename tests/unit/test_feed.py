"""The feed: retrieval then ranking, ordered by the weighted score, features logged per item;
cold users and short beams still get a full feed."""

import numpy as np
import pytest

from serving.catalogue import Catalogue
from serving.feed import FeedBuilder, NoModel
from serving.history import Histories
from streaming.schemas import encode, parse_features
from tests.serving_models import ITEMS, StaticLoader, trained_loader


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    return trained_loader(tmp_path_factory.mktemp("bundle"))


def test_a_feed_is_ranked_by_weighted_score_with_logged_features(loader):
    histories = Histories(per_user=3)
    histories.add(5, 11)
    builder = FeedBuilder(loader, Catalogue(genres={11: [1_000_003]}), histories, candidates=30,
                          task_weights={"click": 1.0, "like": 2.0})
    request_id, version, served = builder.build(5, k=8)
    assert version == "flywheel/7" and len(served) == 8 and [s.position for s in served] == list(range(8))
    assert len({s.item_id for s in served}) == 8 and {s.item_id for s in served} <= set(ITEMS.tolist())
    totals = [s.score for s in served]
    assert totals == sorted(totals, reverse=True)
    for s in served:
        assert s.score == pytest.approx(s.scores["click"] + 2 * s.scores["like"], rel=1e-5)
        f = parse_features(encode(s.features))  # valid on the wire
        assert f.request_id == request_id and f.user_id == 5 and f.item_id == s.item_id
        assert f.sparse["history"] == [11] and f.sparse["item"] == [s.item_id] and f.position == s.position


def test_cold_users_and_short_beams_still_fill_the_feed(loader):
    builder = FeedBuilder(loader, Catalogue(), Histories(), candidates=1)  # the beam keeps 1 item
    _, _, served = builder.build(2**40, k=12)  # a user no table has seen
    assert len(served) == 12 and len({s.item_id for s in served}) == 12


def test_no_champion_is_a_clear_error():
    with pytest.raises(NoModel, match="make retrain"):
        FeedBuilder(StaticLoader(None), Catalogue(), Histories()).build(1, 5)


def test_histories_keep_the_newest_items_of_the_newest_users():
    h = Histories(per_user=2, users=2)
    for user, item in ((1, 10), (1, 11), (1, 10), (2, 20), (3, 30)):
        h.add(user, item)
    assert h.get(1) == [] and h.get(2) == [20] and h.get(3) == [30]  # user 1 forgotten first
    h2 = Histories(per_user=2)
    for item in (10, 11, 12, 11):
        h2.add(1, item)
    assert h2.get(1) == [12, 11]
    assert np.array_equal(h2.get(9), [])
