"""The daily retrain's model part: plan the days, train the ranker and the retriever on the
sampled training set, evaluate on the next day, log everything to MLflow.

Steps (the ``daily_retrain`` DAG runs them as tasks; ``flywheel retrain`` runs them in one go):

1. :func:`plan`: the evaluation day ``D`` and the ``train_days`` before it; fails with
   :class:`NoData` when ``D`` or every training day has no landed examples.
2. Spark negative sampling (pipelines/batch/negative_sampling.py) writes the training set.
3. :func:`train`: tables start from the newest training-PS snapshot (``mode=warm``) or empty
   (``scratch``); MMoE and Deep Retrieval train with the same code as online training over
   in-process tables; each epoch is evaluated on ``D`` (AUC per task, weighted by the inverse
   sample rates; the retriever's Recall/Precision/NDCG@K with the items each user clicked in
   training excluded, per cold and warm users, and the share of items it scored) beside the
   baselines measured on the same rows (``popularity_*``: most clicked in a trailing window;
   ``ease_*``: EASE over the training clicks). MLflow gets
   params, loss curves, the evaluation per epoch, a plot, the model bundle (``bundle/``), the
   ranker as a registered ``mlflow.tensorflow`` model version, and the PS snapshot written
   from the trained tables (its id and URI as tags: the lineage).
4. Publishing is pipelines/batch/publish.py.

Idempotent per date: a finished run of the same date, parameters and data (a fingerprint of
the example keys) is returned instead of training again; an interrupted run is marked failed
and never reused or published.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from flywheel.config import FlywheelConfig
from pipelines.batch.datasets import NoData, day_range, landed_days, read_days
from flywheel.secrets import tracking_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainParams:
    """What one retrain is asked to do (the DAG's Params form)."""

    date: str  # YYYY-MM-DD: the evaluation day; the train_days before it train
    mode: str = "warm"  # warm: tables start from the newest PS snapshot; scratch: empty
    epochs: int = 1
    train_days: int = 7
    force_publish: bool = False

    def __post_init__(self):
        if self.mode not in ("warm", "scratch"):
            raise ValueError(f"mode {self.mode!r}: expected warm or scratch")
        if self.epochs < 1 or self.train_days < 1:
            raise ValueError(f"epochs ({self.epochs}) and train_days ({self.train_days}) must be >= 1")


def plan(cfg: FlywheelConfig, params: RetrainParams) -> dict:
    """The days to sample and train on; raises NoData naming the missing day and the fix."""
    from flywheel.hdfs import webhdfs

    fs, root = webhdfs(cfg), cfg.joiner.examples_dir.rstrip("/")
    train = day_range(params.date, params.train_days)
    files = landed_days(fs, root, train + [params.date])
    fix = ("land examples first: run the backfill_history DAG (or 'flywheel import <folder>'), "
           "or check that the joiner lands examples ('make joiner-status')")
    if not files[params.date]:
        raise NoData(f"no landed examples for the evaluation day {params.date} under "
                     f"{cfg.hdfs_uri}{root}/dt={params.date}: {fix}")
    have = [d for d in train if files[d]]
    if not have:
        raise NoData(f"no landed examples for any training day {train[0]}..{train[-1]} under "
                     f"{cfg.hdfs_uri}{root}: {fix}")
    return {"eval_date": params.date, "train_dates": have, "dates": ",".join(have + [params.date]),
            "missing_train_dates": [d for d in train if not files[d]]}


def fingerprint(days: dict[str, list[dict]]) -> str:
    """A digest of which examples each day holds (keys and labels), independent of file layout."""
    digest = hashlib.sha256()
    for day in sorted(days):
        keys = sorted(f"{e['request_id']}|{e['item_id']}|{sorted(e['labels'].items())}" for e in days[day])
        digest.update(f"{day}:{len(keys)}:".encode() + hashlib.sha256("\n".join(keys).encode()).digest())
    return digest.hexdigest()[:16]


def tables_for(cfg: FlywheelConfig) -> dict:
    """Fresh in-process tables shaped like the training PS's (same optimizers, admission)."""
    from paramserver.service import build_tables

    return build_tables(cfg, "training")


def clicked_by_user(rows: list[dict]) -> dict[int, set[int]]:
    """user -> the items they clicked in ``rows`` (what they have seen, for the top-K protocol)."""
    seen: dict[int, set[int]] = {}
    for e in rows:
        if e["labels"]["click"]:
            seen.setdefault(e["user_id"], set()).add(e["item_id"])
    return seen


def recent_popular(rows: list[dict], window_h: float):
    """The items most clicked in the trailing ``window_h`` hours of ``rows`` (a fitted
    ``MostPopular``), or None without clicks: the retriever's popularity prior and the
    popularity baseline count the same clicks."""
    from models.baselines import MostPopular

    clicks = [e for e in rows if e["labels"]["click"]]
    if not clicks:
        return None
    return MostPopular(window_s=window_h * 3_600_000).fit([e["item_id"] for e in clicks],
                                                          [e["event_time"] for e in clicks])


def recent_clicks(rows: list[dict], items: np.ndarray, window_h: float) -> np.ndarray:
    """Each of ``items``' clicks in the trailing ``window_h`` hours of ``rows``."""
    popular = recent_popular(rows, window_h)
    return popular.score(items) if popular is not None else np.zeros(len(items))


def _queries(rows: list[dict]) -> tuple[list[int], list[dict], dict[int, set[int]]]:
    """(users, each one's first example of the day as its query, user -> items clicked that day)."""
    first: dict[int, dict] = {}
    for e in sorted(rows, key=lambda e: e["event_time"]):
        if e["labels"]["click"]:
            first.setdefault(e["user_id"], e)
    users = sorted(first)
    return users, [first[u] for u in users], clicked_by_user(rows)


def _auc(rows: list[dict], tasks: list[str], scores: dict[str, np.ndarray]) -> dict[str, float]:
    from models.evaluation import auc_per_task
    from models.mmoe import task_weights

    labels = {t: np.array([e["labels"][t] for e in rows]) for t in tasks}
    return {f"auc_{t}": v for t, v in auc_per_task(labels, scores, task_weights(rows, tasks)).items()}


def evaluate(ranker, retriever, rows: list[dict], k: int, seen: dict[int, set[int]] | None = None) -> dict[str, float]:
    """The models on ``rows`` (one day): AUC per task (weighted 1 / rate) and the retriever's
    Recall/Precision/NDCG@K per user group with the items in ``seen`` (user -> items clicked
    in training) excluded, and without (``_raw``); see models.evaluation.top_k_metrics."""
    from models.evaluation import flat, top_k_metrics

    tasks = list(ranker.model.tasks)
    scores: dict[str, list] = {t: [] for t in tasks}
    for start in range(0, len(rows), 2048):
        for t, s in ranker.score(rows[start:start + 2048]).items():
            scores[t].append(s)
    out = _auc(rows, tasks, {t: np.concatenate(v) for t, v in scores.items()})
    seen = seen or {}
    users, queries, truth = _queries(rows)
    most = max((len(seen.get(u, ())) for u in users), default=0)
    found = dict(zip(users, retriever.retrieve(queries, k + most))) if users else {}
    figures = flat(top_k_metrics(lambda user, n: (found[user][0][:n], found[user][1]), truth, seen, k,
                                 len(retriever.items)))
    out.update({("eval_" + name if name.startswith("users") else name): v for name, v in figures.items()})
    out["eval_examples"] = len(rows)
    return out


def baseline_figures(train_rows: list[dict], rows: list[dict], tasks: list[str], k: int, n_items: int,
                     window_h: float, ease_max_items: int) -> dict[str, float]:
    """The baselines on ``rows`` after training on ``train_rows``, named ``popularity_*`` and
    ``ease_*`` like :func:`evaluate`'s figures: most popular by clicks in the trailing
    ``window_h`` hours of training (its click counts are also the ranking score for the AUC),
    and EASE over the training clicks (left out, with a log line, above ``ease_max_items``)."""
    from models.baselines import EASE
    from models.evaluation import flat, top_k_metrics

    popular = recent_popular(train_rows, window_h)
    if popular is None:
        return {}
    clicks = [e for e in train_rows if e["labels"]["click"]]
    score = popular.score([e["item_id"] for e in rows])
    out = {f"popularity_{m}": v for m, v in _auc(rows, tasks, dict.fromkeys(tasks, score)).items()}
    seen = clicked_by_user(train_rows)
    _, _, truth = _queries(rows)
    out.update({f"popularity_{m}": v for m, v in flat(top_k_metrics(
        lambda user, n: (popular.recommend(n), n_items), truth, seen, k, n_items)).items()})
    try:
        ease = EASE(max_items=ease_max_items).fit([e["user_id"] for e in clicks], [e["item_id"] for e in clicks])
    except ValueError as exc:
        log.warning("no EASE baseline: %s", exc)
        return out
    out.update({f"ease_{m}": v for m, v in flat(top_k_metrics(
        lambda user, n: (ease.recommend(user, n), len(ease.items)), truth, seen, k, n_items)).items()})
    return out


def _models(cfg: FlywheelConfig, local, items: np.ndarray):
    from models.features import DENSE, RANK_SLOTS, RANK_TASKS, USER_SLOTS
    from models.mmoe import MMoE
    from models.ranking import RankingTrainer
    from models.retrieval import DeepRetrievalTrainer

    b = cfg.batch
    ranker = RankingTrainer(MMoE(tasks=tuple(RANK_TASKS)), RANK_SLOTS, DENSE, local)
    retriever = DeepRetrievalTrainer(local, USER_SLOTS, items, depth=b.dr_depth, width=b.dr_width, beam=b.dr_beam,
                                     paths_per_item=b.dr_paths_per_item, alpha=b.dr_alpha, seed=b.seed,
                                     prior_weight=b.dr_prior_weight, learning_rate=b.dr_learning_rate)
    return ranker, retriever


def _earlier_run(client, experiment_id: str, date: str, key: str):
    runs = client.search_runs([experiment_id], f"tags.date = '{date}' and tags.retrain_key = '{key}' "
                              "and attributes.status = 'FINISHED'", max_results=1,
                              order_by=["attributes.start_time DESC"])
    return runs[0] if runs and runs[0].data.tags.get("model_version") else None


def train(cfg: FlywheelConfig, params: RetrainParams, tags: dict | None = None) -> dict:
    """Train, evaluate and log one retrain (see the module docstring); returns
    ``{date, run_id, version, train_dates, snapshot_id, metrics, reused}``."""
    import mlflow
    from mlflow import MlflowClient

    from flywheel.hdfs import webhdfs
    from models.sparse import LocalTables
    from paramserver.handover import load_snapshot, write_snapshot
    from paramserver.snapshots import latest

    started = time.monotonic()
    fs = webhdfs(cfg)
    planned = plan(cfg, params)
    days = read_days(fs, cfg.batch.training_dir.rstrip("/"), planned["train_dates"] + [params.date])
    if not days[params.date]:
        raise NoData(f"the training set has no examples for {params.date} under "
                     f"{cfg.hdfs_uri}{cfg.batch.training_dir}/dt={params.date}: run the negative_sampling task first")
    key = hashlib.sha256(json.dumps([asdict(params), fingerprint(days), cfg.batch.model_dump()],
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]
    mlflow.set_tracking_uri(tracking_uri(cfg))
    experiment = mlflow.set_experiment(cfg.batch.experiment)
    client = MlflowClient(tracking_uri(cfg))
    if earlier := _earlier_run(client, experiment.experiment_id, params.date, key):
        log.info("retrain of %s with these params and data already ran: run %s, version %s",
                 params.date, earlier.info.run_id, earlier.data.tags["model_version"])
        return {"date": params.date, "run_id": earlier.info.run_id, "version": earlier.data.tags["model_version"],
                "train_dates": planned["train_dates"], "snapshot_id": earlier.data.tags["snapshot_id"], "metrics": earlier.data.metrics, "reused": True}

    train_rows = [e for d in planned["train_dates"] for e in days[d]]
    eval_rows = days[params.date]
    if not train_rows:
        raise NoData(f"the training set has no examples for {planned['train_dates']}: run negative_sampling first")
    tables = tables_for(cfg)
    root = cfg.paramserver.snapshot_dir
    warm_from = latest(fs, root) if params.mode == "warm" else None
    if warm_from:
        load_snapshot(fs, root, warm_from, tables, cfg.paramserver.shards)
    local = LocalTables(tables)
    items = np.unique([e["item_id"] for e in train_rows + eval_rows])
    ranker, retriever = _models(cfg, local, items)
    b = cfg.batch
    with mlflow.start_run(run_name=f"retrain {params.date}") as run:
        mlflow.set_tags({"date": params.date, "retrain_key": key, "mode": params.mode,
                         "warm_from_snapshot": warm_from or "none", **(tags or {})})
        mlflow.log_params({**asdict(params), "train_dates": ",".join(planned["train_dates"]),
                           "missing_train_dates": ",".join(planned["missing_train_dates"]) or "none",
                           "train_examples": len(train_rows), "eval_examples": len(eval_rows), "items": len(items),
                           **{f"batch.{k}": v for k, v in b.model_dump().items()}})
        curve, metrics = _fit(ranker, retriever, train_rows, eval_rows, params.epochs, b)
        manifest = write_snapshot(fs, root, tables, cfg.paramserver.shards, hdfs_uri=cfg.hdfs_uri, source={
            "mlflow_run_id": run.info.run_id, "date": params.date, "mode": params.mode, "warm_from": warm_from})
        version = _log_model(cfg, run.info.run_id, ranker, retriever, tables, manifest, params, metrics)
        _log_plot(curve, metrics)
        mlflow.set_tags({"snapshot_id": manifest["snapshot_id"], "snapshot_uri": manifest["uri"],
                         "model_version": version})
        mlflow.log_metric("wall_s", time.monotonic() - started)
    return {"date": params.date, "run_id": run.info.run_id, "version": version, "train_dates": planned["train_dates"],
            "snapshot_id": manifest["snapshot_id"], "metrics": metrics, "reused": False}


def _fit(ranker, retriever, train_rows, eval_rows, epochs: int, b) -> tuple[list, dict]:
    import mlflow

    rng = np.random.default_rng(b.seed)
    curve, step, metrics = [], 0, {}
    seen = clicked_by_user(train_rows)
    retriever.set_popularity(recent_clicks(train_rows, retriever.items, b.popular_window_h))
    baselines = baseline_figures(train_rows, eval_rows, list(ranker.model.tasks), b.recall_k, len(retriever.items),
                                 b.popular_window_h, b.ease_max_items)
    n_batches = -(-len(train_rows) // b.batch_size)
    for epoch in range(epochs):
        t0 = time.monotonic()
        order = rng.permutation(len(train_rows))
        for n, start in enumerate(range(0, len(train_rows), b.batch_size)):
            batch = [train_rows[i] for i in order[start:start + b.batch_size]]
            loss_r = ranker.train_batch(batch)
            clicks = [e for e in batch if e["labels"]["click"]]
            loss_d = float(retriever.train_batch(clicks)) if clicks else float("nan")
            step += 1
            if n % 10 == 0 or n == n_batches - 1:
                mlflow.log_metrics({"loss_ranker": loss_r, "loss_retriever": loss_d}, step=step)
                curve.append((step, loss_r, loss_d))
                log.info("epoch %d/%d batch %d/%d: ranker loss %.4f, retriever loss %.4f",
                         epoch + 1, epochs, n + 1, n_batches, loss_r, loss_d)
        moved = retriever.end_epoch()
        metrics = evaluate(ranker, retriever, eval_rows, b.recall_k, seen)
        metrics.update({**baselines, "items_moved_paths": moved, "epoch_s": time.monotonic() - t0})
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)}, step=epoch + 1)
        log.info("epoch %d/%d evaluated on %d examples: %s", epoch + 1, epochs, len(eval_rows),
                 ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return curve, metrics


def _log_model(cfg, run_id, ranker, retriever, tables, manifest, params, metrics) -> str:
    """Bundle as artifacts, the ranker as a registered model version; returns the version."""
    import mlflow
    import mlflow.tensorflow
    import tensorflow as tf
    from mlflow import MlflowClient

    from models.bundle import ServingRanker, feature_width, save_bundle

    dims = {name: table.dim for name, table in tables.items()}
    with tempfile.TemporaryDirectory() as tmp:
        save_bundle(tmp, ranker, retriever, dims, {
            "snapshot": {"id": manifest["snapshot_id"], "uri": manifest["uri"]}, "date": params.date,
            "mlflow_run_id": run_id, "metrics": {k: v for k, v in metrics.items() if np.isfinite(v)}})
        mlflow.log_artifacts(tmp, "bundle")
    serving = ServingRanker(ranker.model, feature_width(ranker.slots, dims, ranker.dense))
    info = mlflow.tensorflow.log_model(serving, name="ranker", registered_model_name=cfg.batch.model_name,
                                       pip_requirements=[f"tensorflow=={tf.__version__}"])
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri(cfg))
    for k, v in {"date": params.date, "snapshot_id": manifest["snapshot_id"], "snapshot_uri": manifest["uri"],
                 cfg.batch.gate_metric: metrics.get(cfg.batch.gate_metric)}.items():
        client.set_model_version_tag(cfg.batch.model_name, version, k, str(v))
    return version


def _log_plot(curve: list, metrics: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    if curve:
        steps, ranker_loss, retriever_loss = zip(*curve)
        left.plot(steps, ranker_loss, label="ranker")
        left.plot(steps, retriever_loss, label="retriever")
    left.set(xlabel="batch", ylabel="loss", title="training loss")
    left.legend()
    aucs = {k[4:]: v for k, v in metrics.items() if k.startswith("auc_") and np.isfinite(v)}
    right.bar(list(aucs), list(aucs.values()))
    right.set(ylim=(0.5, 1.0), title="AUC on the evaluation day")
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/training.png")
    plt.close(fig)
