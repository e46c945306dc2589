"""The NumPy serving pass: the same beams, candidates and scores as TensorFlow's, and a
version it cannot serve (or that disagrees) is served by TensorFlow."""

import numpy as np
import pytest

import serving.forward as forward
from models.sparse import SparseBatch
import tensorflow as tf  # after models/ (it sets TF up)
from serving.candidate_rows import CandidateRows
from serving.catalogue import Catalogue
from serving.feed import FeedBuilder
from serving.forward import Forward
from serving.history import Histories
from tests.serving_models import ITEMS, trained_loader

GENRES = {int(i): [1_000_000 + int(i) % 5, 1_000_010 + int(i) % 3] for i in ITEMS}


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    return trained_loader(tmp_path_factory.mktemp("bundle"))


def histories(user: int, items=(3, 9, 17)) -> Histories:
    h = Histories(per_user=10)
    for i in items:
        h.add(user, i)
    return h


def test_the_beam_and_reranker_match_tensorflows(loader):
    model = loader.current
    fast = Forward.of(model)
    for user in (5, 6, 2**40):
        sparse = {"user": [user], "history": [3, 9], "user_attr": [1_000_003]}
        batch = SparseBatch.from_examples([{"sparse": sparse}], model.retriever.slots)
        logits, beams, log_probs = model.retriever._search(batch.pull(model.retriever.source), batch.tensors(),
                                                           tf.constant(1))
        rows = {t: model.retriever.source.pull(t, ids) for t, ids in
                {"user_id": [user], "item_id": [3, 9], "attr": [1_000_003]}.items()}
        pooled = {"user": rows["user_id"][0], "history": rows["item_id"].mean(0), "user_attr": rows["attr"][0]}
        np_logits, np_beams, np_log_probs = fast.retriever.search(fast.retriever.user(pooled))
        assert np.allclose(np_logits, logits.numpy()[0], rtol=1e-4, atol=1e-5)
        assert np.array_equal(np_beams, beams.numpy()[0])
        assert np.allclose(np_log_probs, log_probs.numpy()[0], rtol=1e-4, atol=1e-5)
        assert len(np_beams) == model.retriever.search_beam > model.retriever.beam  # the prior's pool


@pytest.mark.parametrize("cached", [False, True])
def test_a_numpy_feed_is_the_tensorflow_feed(loader, cached):
    def builder(how):
        rows = CandidateRows(loader.current.ranker.source) if cached else None
        return FeedBuilder(loader, Catalogue(genres=GENRES), histories(5), candidates=30, forward=how,
                           candidate_rows=rows)
    with_np, with_tf = builder("numpy"), builder("tensorflow")
    for user in (5, 5, 2**40):
        _, _, got = with_np.build(user, k=12)
        _, _, want = with_tf.build(user, k=12)
        assert [s.item_id for s in got] == [s.item_id for s in want]
        assert [s.path for s in got] == [s.path for s in want]
        for g, w in zip(got, want):
            assert g.scores == pytest.approx(w.scores, rel=1e-4, abs=1e-6)
    assert with_np.forward_in_use == "numpy" and with_tf.forward_in_use == "tensorflow"
    assert with_np.forward_mismatches == 0


def test_a_pass_that_disagrees_is_replaced_by_tensorflow(loader, monkeypatch):
    builder = FeedBuilder(loader, Catalogue(genres=GENRES), Histories(), candidates=30)
    real = forward.Ranker.scores
    monkeypatch.setattr(forward.Ranker, "scores", lambda self, x: {t: v + 0.01 for t, v in real(self, x).items()})
    _, _, first = builder.build(5, k=8)
    assert builder.forward_in_use == "tensorflow" and builder.forward_mismatches == 1
    monkeypatch.undo()
    _, _, again = builder.build(5, k=8)  # the version stays with TensorFlow
    assert builder.forward_in_use == "tensorflow"
    assert [s.score for s in again] == pytest.approx([s.score for s in first])


def test_a_numpy_pass_that_fails_leaves_the_version_to_tensorflow(loader, monkeypatch):
    builder = FeedBuilder(loader, Catalogue(genres=GENRES), Histories(), candidates=30)
    monkeypatch.setattr(forward.Retriever, "search", lambda self, user: {}["no such slot"])
    assert builder.forward_in_use == "tensorflow"
    _, _, served = builder.build(5, k=8)  # answered, by TensorFlow
    assert len(served) == 8 and builder.forward_in_use == "tensorflow" and builder.forward_mismatches == 1
    _, _, again = builder.build(6, k=8)
    assert len(again) == 8


def test_a_beam_that_differs_is_caught_even_when_the_fill_hides_it(loader, monkeypatch):
    real, trainer = forward.Retriever.search, loader.current.retriever

    def search(self, user):  # the NumPy pass loses one of the paths the selection keeps
        logits, pool, log_probs = real(self, user)
        kept = trainer.select_paths(pool, log_probs)[0]
        other = np.array([not np.array_equal(p, kept) for p in pool])
        return logits, pool[other], log_probs[other]

    monkeypatch.setattr(forward.Retriever, "search", search)
    builder = FeedBuilder(loader, Catalogue(genres=GENRES), Histories(), candidates=30)
    builder.build(5, k=len(ITEMS))  # the whole catalogue: the same candidate set either way
    assert builder.forward_in_use == "tensorflow" and builder.forward_mismatches == 1


def test_an_unknown_layer_is_served_by_tensorflow(loader, monkeypatch):
    monkeypatch.setattr(forward, "_activation", lambda layer: (_ for _ in ()).throw(forward.Unsupported("gelu")))
    builder = FeedBuilder(loader, Catalogue(), Histories(), candidates=30)
    _, _, served = builder.build(5, k=8)
    assert len(served) == 8 and builder.forward_in_use == "tensorflow"


def test_segment_mean_is_zero_for_an_empty_segment():
    rows = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
    got = forward.segment_mean(rows, np.array([0, 0, 2]), 3)
    assert got.tolist() == [[2, 3], [0, 0], [5, 6]]


class Moving:
    """A source whose user row moves after every pull, as the serving PS's do while the
    online trainer trains."""

    def __init__(self, source):
        self.source = source

    def pull_many(self, ids, insert=False):
        out = {t: self.source.pull(t, i, insert) for t, i in ids.items()}
        self.source.push("user_id", np.array([5], np.uint64), np.full((1, 8), 0.5, np.float32))
        return out

    def pull(self, table, ids, insert=False):
        return self.pull_many({table: ids}, insert)[table]


def test_the_first_feed_check_compares_both_passes_on_the_same_rows(tmp_path):
    loader = trained_loader(tmp_path)
    moving = Moving(loader.current.ranker.source)
    loader.current.ranker.source = loader.current.retriever.source = moving
    builder = FeedBuilder(loader, Catalogue(genres=GENRES), histories(5), candidates=30)
    builder.build(5, k=10)
    assert builder.forward_in_use == "numpy" and builder.forward_mismatches == 0
