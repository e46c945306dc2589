"""The feed: retrieval then ranking, ordered by the weighted score, features logged per item;
cold users and short beams still get a full feed."""

import numpy as np
import pytest

from models.sparse import LocalTables, RequestRows
from serving.catalogue import Catalogue
from serving.feed import FeedBuilder, NoModel
from serving.history import Histories
from streaming.schemas import encode, parse_features
from tests.serving_models import ITEMS, StaticLoader, tables, trained_loader


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
    assert sum(s.path is not None for s in served) <= 1  # the rest filled from the catalogue, no path


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


class CountingTables(LocalTables):
    """LocalTables that records every pull (table, ids)."""

    def __init__(self, tables):
        super().__init__(tables)
        self.calls = []

    def pull(self, table, ids, insert=False):
        self.calls.append((table, np.asarray(ids).tolist()))
        return super().pull(table, ids, insert)


def test_request_rows_pull_each_id_once_and_read_what_they_pulled_first():
    src = CountingTables(tables().tables)
    src.pull("user_id", [1, 2, 3], insert=True)
    src.pull("user_id", [1, 2, 3], insert=True)
    src.calls.clear()
    rows = RequestRows(src)
    first = rows.pull_many({"user_id": np.array([3, 1, 3]), "item_id": np.array([], np.uint64)})
    np.testing.assert_array_equal(first["user_id"], src.tables["user_id"].lookup([3, 1, 3]))
    assert first["item_id"].shape == (0, 8)
    src.tables["user_id"].apply_gradients([1], np.ones((1, 8), np.float32))  # the PS moves on mid-request
    again = rows.pull("user_id", [1, 2])
    np.testing.assert_array_equal(again[0], first["user_id"][1])  # the request's own view of user 1
    assert [c for c in src.calls if c[1]] == [("user_id", [3, 1]), ("user_id", [2])]
    with pytest.raises(ValueError, match="read only"):
        rows.pull("user_id", [4], insert=True)


def test_scoring_a_users_candidates_with_shared_slots_equals_scoring_full_rows(loader):
    ranker = loader.current.ranker
    shared = {"user": [5], "history": [11, 12, 13], "user_attr": []}
    own = [{"item": [i], "genre": [1_000_003] if i % 2 else []} for i in range(1, 25)]
    full = ranker.score([{"sparse": {**shared, **o}, "position": 0, "dense": {}} for o in own])
    fast = ranker.score_candidates(shared, own)
    for task in full:
        np.testing.assert_allclose(fast[task], full[task], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="both shared and per candidate"):
        ranker.score_candidates(shared, [{"item": [1], "user": [5]}])


def test_compiled_retrieval_returns_the_eager_beam_items_in_reranker_order(loader):
    retriever = loader.current.retriever
    queries = [{"sparse": {"user": [u], "history": [11] if u % 2 else [], "user_attr": []}} for u in range(1, 12)]
    users = retriever.user_vectors(queries)
    pools, log_probs = retriever.model.beam_search(users, retriever.search_beam)
    items = retriever.model.reranker.embeddings.numpy()
    for n, (top, scored) in enumerate(retriever.retrieve(queries, k=6)):
        beam = retriever.select_paths(pools[n], log_probs[n])
        cand = retriever.paths.candidates(beam)
        scores = items[cand] @ users[n].numpy() + retriever.prior[cand]
        assert scored == len(cand)
        assert top == [int(retriever.items[cand[i]]) for i in np.argsort(-scores, kind="stable")[:6]]
        [(same, _, paths)] = retriever.retrieve_with_paths(queries[n:n + 1], k=6)
        index = {int(item): i for i, item in enumerate(retriever.items)}
        assert same == top and len(paths) == len(top)
        for item, path in zip(top, paths):  # the path shown for an item holds it, and is on the beam
            assert index[item] in retriever.paths.items_on[path]
            assert path in set(map(tuple, beam.tolist()))


def test_catalogue_genre_columns_give_each_id_its_candidate_and_unknown_items_none():
    cat = Catalogue(genres={1: [7, 8], 3: [9]})
    ids, rows = cat.genre_columns([3, 2, 1])
    assert ids.tolist() == [9, 7, 8] and rows.tolist() == [0, 2, 2]
    ids, rows = cat.genre_columns([])
    assert len(ids) == 0 and len(rows) == 0


def test_a_served_items_logged_features_hold_its_own_genres(loader):
    genres = {int(i): [1_000_000 + int(i) % 5] for i in ITEMS}
    builder = FeedBuilder(loader, Catalogue(genres=genres), Histories(), candidates=30)
    _, _, served = builder.build(5, k=10)
    assert all(s.features.sparse["genre"] == genres[s.item_id] for s in served)
