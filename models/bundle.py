"""A trained model as files: the ranker's and the retriever's dense weights, the item
catalogue and paths, and what they were trained with. The sparse state is not in it: it is
a parameter-server snapshot on HDFS, named in ``meta.json`` (Monolith's split).

Layout of a bundle folder (logged to MLflow under ``bundle/``)::

    meta.json       tasks, slots, table dims, hyper-parameters, items, the snapshot's id and URI
    ranker.npz      MMoE weights (get_weights order)
    retriever.npz   user tower + Deep Retrieval weights
    paths.npy       each item's J paths [n_items, J, D]
    popularity.npy  recent engagements per item [n_items]: the retriever's popularity prior

Example::

    save_bundle(folder, ranker, retriever, {"snapshot": manifest["snapshot_id"]})
    ranker, retriever, meta = load_bundle(folder, source=serving_ps_client)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import models  # noqa: F401  (TF environment first)
import tensorflow as tf

from models.deep_retrieval import DeepRetrieval, PathAssignment
from models.mmoe import MMoE
from models.ranking import RankingTrainer
from models.retrieval import DeepRetrievalTrainer
from models.sparse import EmbeddingSource, Slot

FORMAT = 1


def feature_width(slots: list[Slot], dims: dict[str, int], dense: list[str]) -> int:
    """Width of the ranker's input: each slot's table dim, then the dense features."""
    return sum(dims[s.table] for s in slots) + len(dense)


def build(ranker: RankingTrainer, retriever: DeepRetrievalTrainer, dims: dict[str, int]) -> None:
    """Create every dense weight (Keras makes them on the first call) with zero inputs."""
    width = feature_width(ranker.slots, dims, ranker.dense)
    ranker.model({"features": tf.zeros((1, width)), "position": tf.zeros((1,), tf.int32)}, training=True)
    user = retriever.tower({s.name: tf.zeros((1, dims[s.table])) for s in retriever.slots})
    retriever._loss(user, np.zeros(1, np.int64))
    retriever._warm = True


def save_bundle(folder: str | Path, ranker: RankingTrainer, retriever: DeepRetrievalTrainer, dims: dict[str, int],
                extra: dict) -> Path:
    """Write the bundle; ``extra`` goes into meta.json (snapshot, data, metrics...)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dr = retriever.model
    meta = {
        "format": FORMAT, "tasks": list(ranker.model.tasks), "dense": ranker.dense, "dims": dims,
        "ranker_slots": [[s.name, s.table] for s in ranker.slots],
        "retriever_slots": [[s.name, s.table] for s in retriever.slots],
        "retriever": {"depth": dr.depth, "width": dr.width, "beam": retriever.beam, "alpha": retriever.alpha,
                      "prior_weight": retriever.prior_weight, "beam_pool": retriever.beam_pool,
                      "paths_per_item": retriever.paths.j, "user_dim": retriever.user_dim},
        "items": [int(i) for i in retriever.items], **extra,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    np.savez(folder / "ranker.npz", *ranker.model.get_weights())
    np.savez(folder / "retriever.npz", *(retriever.tower.get_weights() + dr.get_weights()))
    np.save(folder / "paths.npy", retriever.paths.item_paths)
    np.save(folder / "popularity.npy", retriever.popularity)
    return folder


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def load_bundle(folder: str | Path, source: EmbeddingSource) -> tuple[RankingTrainer, DeepRetrievalTrainer, dict]:
    """Rebuild the ranker and retriever of a bundle over ``source`` (a PS client or local tables).

    Raises:
      ValueError: the bundle's format is unknown or its weights do not fit its meta.
    """
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{folder}: bundle format {meta.get('format')!r}; this code reads {FORMAT}")
    r = meta["retriever"]
    ranker = RankingTrainer(MMoE(tasks=tuple(meta["tasks"])), [Slot(*s) for s in meta["ranker_slots"]],
                            meta["dense"], source)
    retriever = DeepRetrievalTrainer(source, [Slot(*s) for s in meta["retriever_slots"]], np.array(meta["items"]),
                                     depth=r["depth"], width=r["width"], beam=r["beam"],
                                     paths_per_item=r["paths_per_item"], alpha=r["alpha"], user_dim=r["user_dim"],
                                     prior_weight=r.get("prior_weight", 1.0), beam_pool=r.get("beam_pool", 3))
    build(ranker, retriever, meta["dims"])
    ranker.model.set_weights(_weights(folder / "ranker.npz"))
    weights = _weights(folder / "retriever.npz")
    n_tower = len(retriever.tower.get_weights())
    retriever.tower.set_weights(weights[:n_tower])
    retriever.model.set_weights(weights[n_tower:])
    paths = np.load(folder / "paths.npy")
    if paths.shape[0] != len(meta["items"]):
        raise ValueError(f"{folder}: paths.npy has {paths.shape[0]} items, meta.json {len(meta['items'])}")
    retriever.paths.item_paths = paths
    retriever.paths._index()
    if (folder / "popularity.npy").exists():  # bundles written before the prior have none: no prior
        popularity = np.load(folder / "popularity.npy")
        if popularity.shape != (len(meta["items"]),):
            raise ValueError(f"{folder}: popularity.npy has {popularity.shape} entries, "
                             f"meta.json {len(meta['items'])} items")
        retriever.set_popularity(popularity)
    return ranker, retriever, meta


class ServingRanker(tf.Module):
    """The ranker's serving graph for MLflow's tensorflow flavour: features [n, width] ->
    {task: probability [n]} (no position bias). Embeddings are looked up outside it."""

    def __init__(self, model: MMoE, width: int):
        super().__init__()
        self.model = model
        self.__call__.get_concrete_function(tf.TensorSpec([None, width], tf.float32))  # traced: saved with it

    @tf.function
    def __call__(self, features):
        return self.model.predict_scores({"features": features, "position": tf.zeros(tf.shape(features)[0], tf.int32)})
