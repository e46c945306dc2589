"""Publishing a retrained model: the gate, the sparse handover, then the ``champion`` alias.

1. **Gate**: a candidate whose ``batch.gate_metric`` does not beat the popularity baseline
   measured in its own run (``popularity_<metric>``, same day) is not published. Then the
   candidate and the current ``champion`` are evaluated on the same day (the candidate's
   evaluation day): the champion's bundle is rebuilt over its own PS snapshot. The candidate
   wins when its ``batch.gate_metric`` is higher; ``force`` publishes anyway; with no champion
   (a fresh stack) the candidate is published, and when it is below popularity the reason
   says so. The result is logged on the candidate's run (``gate_*`` metrics, tags ``gate``
   and ``gate_reason``).
2. **Handover**: the candidate's snapshot is marked published (with the start of its
   evaluation day, where its training data ended), then every training-PS shard restores it
   (the PS resets the serving PS to it). The online trainer, on its next (re)start or
   recovery, continues from it and replays the examples from that time.
3. **Alias**: ``champion`` moves to the candidate's version; model servers poll it
   (serving/loader.py) and swap in the new dense weights.

The alias moves last, after the PS accepted the snapshot: a failure before it leaves the
old champion published (a retry repeats the idempotent restore). Publishing a version that
already is the champion does nothing.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import datetime, timezone

import numpy as np

from flywheel.config import FlywheelConfig
from flywheel.secrets import tracking_uri

log = logging.getLogger(__name__)
ALIAS = "champion"


def champion(cfg: FlywheelConfig):
    """The model version holding the ``champion`` alias, or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(tracking_uri(cfg)).get_model_version_by_alias(cfg.batch.model_name, ALIAS)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            return None
        raise


def evaluate_version(cfg: FlywheelConfig, version, rows: list[dict],
                     seen: dict[int, set[int]] | None = None) -> dict[str, float]:
    """Rebuild a registered version (bundle + its PS snapshot) and evaluate it on ``rows``
    (``seen``: see pipelines.batch.retrain.evaluate)."""
    from mlflow import MlflowClient

    from flywheel.hdfs import webhdfs
    from models.bundle import load_bundle
    from models.sparse import LocalTables
    from paramserver.handover import load_snapshot
    from pipelines.batch.retrain import evaluate, tables_for

    tables = tables_for(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        folder = MlflowClient(tracking_uri(cfg)).download_artifacts(version.run_id, "bundle", tmp)
        meta = json.loads(open(f"{folder}/meta.json").read())
        load_snapshot(webhdfs(cfg), cfg.paramserver.snapshot_dir, meta["snapshot"]["id"], tables,
                      cfg.paramserver.shards)
        ranker, retriever, _ = load_bundle(folder, LocalTables(tables))
    return evaluate(ranker, retriever, rows, cfg.batch.recall_k, seen)


def beats_popularity(metrics: dict, metric: str) -> tuple[bool, str]:
    """(does the candidate beat the popularity baseline on ``metric``?, the figures as words);
    a candidate without the baseline's figure (trained before it was measured) does not."""
    mine, baseline = metrics.get(metric, float("nan")), metrics.get(f"popularity_{metric}", float("nan"))
    if not np.isfinite(baseline):
        return False, f"no popularity_{metric} was measured for it (retrain it with this version)"
    if np.isfinite(mine) and mine > baseline:
        return True, f"candidate {mine:.4f} > popularity {baseline:.4f}"
    return False, f"candidate {mine:.4f} <= popularity {baseline:.4f}"


def gate(cfg: FlywheelConfig, candidate: dict, force: bool) -> tuple[bool, str, dict]:
    """(publish?, why, figures) for a candidate ``{version, metrics, ...}`` from ``train``.

    The candidate must beat the popularity baseline (measured in its run on the same day) and
    then the champion. A fresh stack (no champion) publishes a candidate below popularity, so
    that serving has a model, and says so; ``force`` publishes anyway."""
    from pipelines.batch.datasets import read_days
    from pipelines.batch.retrain import clicked_by_user

    metric = cfg.batch.gate_metric
    mine = candidate["metrics"].get(metric, float("nan"))
    current = champion(cfg)
    if current is not None and str(current.version) == str(candidate["version"]):
        return True, "already the champion", {}
    above, versus = beats_popularity(candidate["metrics"], metric)
    figures = {f"gate_candidate_{metric}": mine, f"gate_popularity_{metric}": candidate["metrics"].get(
        f"popularity_{metric}", float("nan"))}
    if current is None:
        return True, "no champion yet" + ("" if above else f"; below the baseline ({metric}: {versus}), "
                                          "published so that serving has a model"), figures
    if not above and not force:
        return False, (f"{metric} on {candidate['date']}: {versus}: a model that does not beat the most popular "
                       f"items is not published; champion {current.version} stays"), figures
    from flywheel.hdfs import webhdfs

    date = candidate["date"]
    # a top-K metric leaves out what each user clicked in training, as the candidate's run did
    before = [] if metric.startswith("auc_") else list(candidate.get("train_dates", []))
    days = read_days(webhdfs(cfg), cfg.batch.training_dir.rstrip("/"), before + [date])
    seen = clicked_by_user([e for d in before for e in days[d]])
    try:
        theirs = evaluate_version(cfg, current, days[date], seen).get(metric, float("nan"))
    except (FileNotFoundError, ValueError) as exc:  # its snapshot pruned, or an older bundle format
        log.warning("champion version %s cannot be evaluated (%s): the candidate is published", current.version, exc)
        return True, f"champion {current.version} cannot be evaluated: {exc}", figures
    figures[f"gate_champion_{metric}"] = theirs
    if force:
        return True, f"forced (candidate {mine:.4f}, champion {theirs:.4f})", figures
    if np.isfinite(mine) and (not np.isfinite(theirs) or mine > theirs):
        return True, f"candidate {mine:.4f} > champion {theirs:.4f} on {date}", figures
    return False, f"candidate {mine:.4f} <= champion {theirs:.4f} on {date}: champion {current.version} stays", figures


def hand_over(cfg: FlywheelConfig, snapshot_id: str, data_end_ms: int, version: str) -> list[dict]:
    """Mark ``snapshot_id`` published, then every training-PS shard restores it (and resets
    serving to it). Marked first: an online trainer recovering in between picks it up itself."""
    from flywheel.hdfs import webhdfs
    from paramserver.client import PSClient
    from paramserver.snapshots import mark_published

    mark_published(webhdfs(cfg), cfg.paramserver.snapshot_dir, snapshot_id, data_end_ms, version)
    client = PSClient.from_config(cfg, role="training")
    body = json.dumps({"snapshot_id": snapshot_id}).encode()
    try:
        return [json.loads(client.call_action(s, "restore", body, timeout_s=1800)) for s in range(client.shards)]
    finally:
        client.close()


def publish(cfg: FlywheelConfig, candidate: dict, force: bool = False) -> dict:
    """Gate, hand over, move the alias (see the module docstring); returns what happened."""
    import mlflow
    from mlflow import MlflowClient

    ok, why, figures = gate(cfg, candidate, force)
    client = MlflowClient(tracking_uri(cfg))
    mlflow.set_tracking_uri(tracking_uri(cfg))
    with mlflow.start_run(run_id=candidate["run_id"]):
        if figures:
            mlflow.log_metrics({k: v for k, v in figures.items() if np.isfinite(v)})
        mlflow.set_tags({"gate": "published" if ok else "kept champion", "gate_reason": why})
    if not ok:
        log.info("not published: %s", why)
        return {"published": False, "reason": why, "version": candidate["version"]}
    if why != "already the champion":
        # it trained on the days before its evaluation day: online examples from then on replay
        data_end_ms = int(datetime.fromisoformat(candidate["date"]).replace(tzinfo=timezone.utc).timestamp() * 1000)
        hand_over(cfg, candidate["snapshot_id"], data_end_ms, candidate["version"])
        client.set_registered_model_alias(cfg.batch.model_name, ALIAS, candidate["version"])
    log.info("version %s is the champion: %s", candidate["version"], why)
    return {"published": True, "reason": why, "version": candidate["version"]}
