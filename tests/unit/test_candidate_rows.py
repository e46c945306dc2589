"""The candidates' row cache of the model server: one PS call per feed for the user's rows,
cached rows refreshed in the background, dropped when unused, forgotten on a new model."""

import numpy as np
import pytest

from models.sparse import LocalTables
from serving.candidate_rows import CandidateRows
from serving.catalogue import Catalogue
from serving.feed import FeedBuilder
from serving.history import Histories
from tests.serving_models import ITEMS, tables, trained_loader


class Counting:
    """An in-process source that records every pull_many call (table -> IDs asked for)."""

    def __init__(self, source: LocalTables):
        self.source, self.calls, self.during_pull = source, [], None

    def pull(self, table, ids, insert=False):
        return self.pull_many({table: ids}, insert)[table]

    def pull_many(self, ids, insert=False):  # like the PS client: no call for no IDs
        asked = {t: np.asarray(i, np.uint64).tolist() for t, i in ids.items() if len(i)}
        if asked:
            self.calls.append(asked)
        if self.during_pull is not None:
            self.during_pull()
        return {t: self.source.pull(t, i, insert) for t, i in ids.items()}

    def push(self, table, ids, grads):
        return self.source.push(table, ids, grads)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def source():
    src = tables()
    src.pull("item_id", np.arange(1, 20, dtype=np.uint64), insert=True)  # admit_after 1: rows exist
    return Counting(src)


def ids(*values):
    return np.array(values, np.uint64)


def test_rows_are_the_sources_and_a_second_get_calls_nothing(source):
    cache = CandidateRows(source, refresh_s=1.0)
    got = cache.get({"item_id": ids(3, 5, 3)})["item_id"]
    assert np.array_equal(got, source.source.pull("item_id", ids(3, 5, 3)))
    assert source.calls == [{"item_id": [3, 5]}]  # each new ID once
    again = cache.get({"item_id": ids(5, 3)})["item_id"]
    assert np.array_equal(again, got[[1, 0]]) and len(source.calls) == 1
    cache.get({"item_id": ids(5, 7), "attr": ids(9)})
    assert source.calls[-1] == {"item_id": [7], "attr": [9]} and len(cache) == 4  # only the new ones, one call


def test_a_refresh_brings_the_sources_new_rows(source):
    cache = CandidateRows(source, refresh_s=1.0)
    before = cache.get({"item_id": ids(4)})["item_id"][0].copy()
    source.source.push("item_id", ids(4), np.ones((1, 8), np.float32))  # training moved the row
    assert np.array_equal(cache.get({"item_id": ids(4)})["item_id"][0], before)  # cached until the refresh
    assert cache.refresh() == 1
    after = cache.get({"item_id": ids(4)})["item_id"][0]
    assert not np.allclose(after, before) and np.array_equal(after, source.source.pull("item_id", ids(4))[0])
    assert len(source.calls) == 2  # the first get, the refresh


def test_rows_no_feed_asked_for_in_keep_s_are_dropped(source):
    clock = Clock()
    cache = CandidateRows(source, refresh_s=1.0, keep_s=60, clock=clock)
    cache.get({"item_id": ids(1, 2)})
    clock.now += 50
    cache.get({"item_id": ids(2)})
    clock.now += 20  # 1 was last asked for 70 s ago, 2 20 s ago
    assert cache.age() == 70
    assert cache.refresh() == 1 and len(cache) == 1 and cache.age() == 0
    assert source.calls[-1] == {"item_id": [2]}
    cache.get({"item_id": ids(1)})
    assert source.calls[-1] == {"item_id": [1]}  # pulled again, as new


def test_clear_forgets_rows_and_discards_a_refresh_that_was_under_way(source):
    cache = CandidateRows(source, refresh_s=1.0)
    cache.get({"item_id": ids(6)})
    source.during_pull = cache.clear  # a new model arrives while the refresh pulls
    assert cache.refresh() == 0 and len(cache) == 0
    source.during_pull = None
    cache.get({"item_id": ids(6)})
    assert source.calls[-1] == {"item_id": [6]}


def test_an_id_first_asked_for_during_a_refresh_is_kept(source):
    clock = Clock()
    cache = CandidateRows(source, refresh_s=1.0, clock=clock)
    cache.get({"item_id": ids(8)})
    source.during_pull = lambda: (setattr(source, "during_pull", None), setattr(clock, "now", clock.now - 1),
                                  cache.get({"item_id": ids(9)}))  # read the clock before the refresh did
    cache.refresh()
    assert len(cache) == 2
    calls = len(source.calls)
    cache.get({"item_id": ids(8, 9)})
    assert len(source.calls) == calls


def test_a_feed_with_the_cache_is_the_same_feed_and_ranks_without_pulling(tmp_path):
    source = Counting(tables())
    loader = trained_loader(tmp_path, source.source)
    genres = {int(i): [1_000_000 + int(i) % 5] for i in ITEMS}
    plain = FeedBuilder(loader, Catalogue(genres=genres), Histories(), candidates=30)
    cached = FeedBuilder(loader, Catalogue(genres=genres), Histories(), candidates=30,
                         candidate_rows=CandidateRows(source, refresh_s=1.0))
    loader.current.ranker.source = loader.current.retriever.source = source
    _, _, want = plain.build(5, k=10)
    _, _, first = cached.build(5, k=10)  # the version's first feed: both passes, on their own snapshot
    cached.build(5, k=10)  # fills the cache
    source.calls.clear()
    _, _, got = cached.build(5, k=10)
    for served in (first, got):
        assert [s.item_id for s in served] == [s.item_id for s in want]
        assert [s.score for s in served] == pytest.approx([s.score for s in want])
    assert source.calls == [{"user_id": [5]}]  # the user's row; no candidate's


def test_a_new_model_version_clears_the_cache(tmp_path, source):
    loader = trained_loader(tmp_path, source.source)
    cache = CandidateRows(source, refresh_s=1.0)
    builder = FeedBuilder(loader, Catalogue(), Histories(), candidates=30, candidate_rows=cache)
    builder.build(5, k=10)
    cache.get({"item_id": ids(999)})
    assert 999 in cache._tables["item_id"].ids
    loader.current = loader.current.__class__(**{**loader.current.__dict__, "version": "8"})
    builder.build(5, k=10)  # the check: on its own snapshot of the rows
    builder.build(5, k=10)
    assert 999 not in cache._tables["item_id"].ids
