"""Model bundles: a trained ranker and retriever saved and rebuilt score and retrieve the same."""

import numpy as np
import pytest

from models.bundle import ServingRanker, feature_width, load_bundle, save_bundle
from models.mmoe import MMoE
from models.ranking import RankingTrainer
from models.retrieval import DeepRetrievalTrainer
from models.sparse import LocalTables, Slot
from paramserver.config import Adagrad, TableConfig
from paramserver.table import EmbeddingTable

SLOTS = [Slot("user", "user_id"), Slot("item", "item_id")]
ITEMS = np.arange(10, 30)
DIMS = {"user_id": 4, "item_id": 4}


def source() -> LocalTables:
    return LocalTables({n: EmbeddingTable(TableConfig(name=n, dim=4, optimizer=Adagrad(0.1), seed=2)) for n in DIMS})


def batch(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return [{"user_id": int(u), "item_id": int(i), "sparse": {"user": [int(u)], "item": [int(i)]},
             "labels": {"click": int(i % 2), "like": 0}, "sample_rate": 1.0}
            for u, i in zip(rng.integers(0, 20, n), rng.choice(ITEMS, n))]


def test_a_saved_bundle_rebuilds_the_same_models(tmp_path):
    src = source()
    ranker = RankingTrainer(MMoE(tasks=("click", "like")), SLOTS, [], src)
    retriever = DeepRetrievalTrainer(src, SLOTS[:1], ITEMS, depth=2, width=3, beam=3, user_dim=6)
    for seed in range(3):
        ranker.train_batch(batch(seed=seed))
        retriever.train_batch(batch(seed=seed))
    retriever.end_epoch()
    retriever.set_popularity(np.arange(len(ITEMS)) % 4)
    save_bundle(tmp_path, ranker, retriever, DIMS, {"snapshot": {"id": "s1"}})
    ranker2, retriever2, meta = load_bundle(tmp_path, src)
    np.testing.assert_array_equal(retriever2.prior, retriever.prior)
    assert retriever2.path_prior == retriever.path_prior and retriever2.search_beam == 9
    assert meta["snapshot"] == {"id": "s1"} and meta["tasks"] == ["click", "like"]
    probe = batch(16, seed=9)
    for task, scores in ranker.score(probe).items():
        np.testing.assert_allclose(ranker2.score(probe)[task], scores, rtol=1e-6)
    assert retriever2.retrieve(probe, k=5) == retriever.retrieve(probe, k=5)
    serving = ServingRanker(ranker2.model, feature_width(SLOTS, DIMS, []))
    assert set(serving(np.zeros((2, 8), np.float32))) == {"click", "like"}


def test_an_unknown_format_is_refused(tmp_path):
    (tmp_path / "meta.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="format 99"):
        load_bundle(tmp_path, source())
