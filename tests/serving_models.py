"""A small trained ranker + retriever over in-process tables, loaded the way the model server
loads a champion (a bundle): for serving tests that do not claim to test MLflow."""

from __future__ import annotations

import time

import numpy as np

from models.bundle import load_bundle, save_bundle
from models.features import DENSE, RANK_SLOTS, RANK_TASKS, USER_SLOTS
from models.mmoe import MMoE
from models.ranking import RankingTrainer
from models.retrieval import DeepRetrievalTrainer
from models.sparse import LocalTables
from paramserver.config import Adagrad, TableConfig
from paramserver.table import EmbeddingTable
from serving.loader import Loaded

ITEMS = np.arange(1, 41)
DIMS = {"user_id": 8, "item_id": 8, "attr": 8}


def tables() -> LocalTables:
    return LocalTables({n: EmbeddingTable(TableConfig(name=n, dim=8, optimizer=Adagrad(0.1), seed=3)) for n in DIMS})


def examples(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for u, i in zip(rng.integers(1, 30, n), rng.choice(ITEMS, n)):
        click = int((u + i) % 3 == 0)
        out.append({"user_id": int(u), "item_id": int(i), "position": 0, "dense": {}, "sample_rate": 1.0,
                    "sparse": {"user": [int(u)], "history": [], "user_attr": [], "item": [int(i)], "genre": []},
                    "labels": {"click": click, "like": click, "finish": 0}})
    return out


class StaticLoader:
    """Holds one loaded model, as ChampionLoader does after a poll."""

    def __init__(self, current):
        self.current = current


def trained_loader(folder, source: LocalTables | None = None) -> StaticLoader:
    source = source or tables()
    ranker = RankingTrainer(MMoE(tasks=tuple(RANK_TASKS)), RANK_SLOTS, DENSE, source)
    retriever = DeepRetrievalTrainer(source, USER_SLOTS, ITEMS, depth=2, width=4, beam=4, user_dim=8)
    for seed in range(4):
        batch = examples(256, seed)
        ranker.train_batch(batch)
        retriever.train_batch([e for e in batch if e["labels"]["click"]])
    retriever.end_epoch()
    clicked = [e["item_id"] for seed in range(4) for e in examples(256, seed) if e["labels"]["click"]]
    retriever.set_popularity(np.array([clicked.count(i) for i in ITEMS]))  # as the daily retrain does
    save_bundle(folder, ranker, retriever, DIMS, {"model_name": "flywheel"})
    ranker, retriever, meta = load_bundle(folder, source)
    return StaticLoader(Loaded("7", ranker, retriever, meta, time.time()))
