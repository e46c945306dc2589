"""Parameter-server snapshots on HDFS, their manifests, and restoring from them.

Layout under ``paramserver.snapshot_dir`` (WebHDFS)::

    <snapshot_id>/shard-<i>/<table>.arrow   one table's rows of shard i (paramserver.snapshot format)
    <snapshot_id>/shard-<i>/manifest.json   rows per table, the deltas-topic offset it covers
    <snapshot_id>/_MANIFEST.json            written last: the snapshot is complete

A shard snapshots while its pushes are held back, right after shipping its pending delta, so
the snapshot equals "everything before ``delta_offset`` on its deltas partition": a serving
replica loads it and consumes from that offset. ``examples_offsets`` (given by the online
trainer) records which training examples the snapshot covers, for replay after a restart.
"""

from __future__ import annotations

import calendar
import json
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

from flywheel.config import FlywheelConfig
from flywheel.hdfs import webhdfs
from paramserver.snapshot import SnapshotError
from paramserver.table import EmbeddingTable
from flywheel.secrets import tracking_uri

COMPLETE = "_MANIFEST.json"
PUBLISHED = "_PUBLISHED.json"  # a batch model's snapshot handed to the training PS (see mark_published)
ID_TIME = "%Y%m%dT%H%M%SZ"
LINEAGE_TAG = "snapshot_id"  # on an MLflow model version: the snapshot it was trained from or handed on
DAY_S = 86_400


def new_snapshot_id() -> str:
    """Sortable by time: ``20261124T014655Z-3fa9c1``."""
    return time.strftime(ID_TIME, time.gmtime()) + "-" + secrets.token_hex(3)


def taken_at(snapshot_id: str) -> float | None:
    """When ``snapshot_id`` was started, in seconds since the epoch; None if it is not a snapshot id."""
    try:
        return float(calendar.timegm(time.strptime(snapshot_id.split("-", 1)[0], ID_TIME)))
    except ValueError:
        return None


def snapshot_ids(fs, root: str) -> list[str]:
    """Names of the folders under ``root``, newest snapshot first (complete or not)."""
    if not fs.exists(root):
        return []
    return sorted((p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)), reverse=True)


def shard_dir(root: str, snapshot_id: str, shard: int) -> str:
    return f"{root}/{snapshot_id}/shard-{shard}"


def write_shard(fs, root: str, snapshot_id: str, shard: int, tables: dict[str, EmbeddingTable],
                delta_offset: int | None, examples_offsets: dict | None) -> dict:
    """Write every table of one shard, then the shard's manifest; returns the manifest."""
    folder = shard_dir(root, snapshot_id, shard)
    fs.makedirs(folder, exist_ok=True)
    rows = {}
    for name, table in tables.items():
        with fs.open(f"{folder}/{name}.arrow", "wb") as f:
            rows[name] = table.snapshot(f)
    manifest = {"snapshot_id": snapshot_id, "shard": shard, "rows": rows, "delta_offset": delta_offset,
                "examples_offsets": examples_offsets or {}, "created": time.time()}
    with fs.open(f"{folder}/manifest.json", "wb") as f:
        f.write(json.dumps(manifest, indent=2).encode())
    return manifest


def latest(fs, root: str) -> str | None:
    """The newest complete snapshot id under ``root`` (None if there is none)."""
    return next((i for i in snapshot_ids(fs, root) if fs.exists(f"{root}/{i}/{COMPLETE}")), None)


def latest_with_offsets(fs, root: str, topic: str) -> str | None:
    """The newest complete snapshot whose every shard records offsets of ``topic``."""
    for snapshot_id in snapshot_ids(fs, root):
        try:
            manifest = json.loads(fs.cat_file(f"{root}/{snapshot_id}/{COMPLETE}"))
        except FileNotFoundError:
            continue
        if all(topic in s.get("examples_offsets", {}) for s in manifest["shards"]):
            return snapshot_id
    return None


def mark_published(fs, root: str, snapshot_id: str, data_end_ms: int, version: str) -> None:
    """Mark a complete snapshot as handed over by a published batch model, trained on examples
    before ``data_end_ms``: an online trainer that (re)starts after this continues from it and
    replays the examples from that time (pipelines/online/trainer.py)."""
    body = {"snapshot_id": snapshot_id, "data_end_ms": int(data_end_ms), "version": str(version),
            "published": time.time()}
    with fs.open(f"{root}/{snapshot_id}/{PUBLISHED}", "wb") as f:
        f.write(json.dumps(body).encode())


def latest_published(fs, root: str) -> dict | None:
    """The newest complete snapshot marked by :func:`mark_published` (its marker), or None."""
    for snapshot_id in snapshot_ids(fs, root):
        if not fs.exists(f"{root}/{snapshot_id}/{COMPLETE}"):
            continue
        try:
            return json.loads(fs.cat_file(f"{root}/{snapshot_id}/{PUBLISHED}"))
        except FileNotFoundError:
            continue
    return None


def resolve(fs, root: str, which: str) -> str | None:
    """``latest``, ``none`` or an explicit snapshot id -> a complete snapshot id (or None)."""
    if which == "none":
        return None
    if which == "latest":
        return latest(fs, root)
    if not fs.exists(f"{root}/{which}/{COMPLETE}"):
        raise SnapshotError(f"snapshot {which} is not complete (no {COMPLETE} in {root}/{which}); "
                            f"choose one listed by 'flywheel ps snapshots'")
    return which


def restore_shard(fs, root: str, snapshot_id: str, shard: int, tables: dict[str, EmbeddingTable]) -> dict:
    """Load one shard's tables from a snapshot; returns its manifest. Raises SnapshotError."""
    folder = shard_dir(root, snapshot_id, shard)
    try:
        manifest = json.loads(fs.cat_file(f"{folder}/manifest.json"))
    except FileNotFoundError:
        raise SnapshotError(f"{folder}/manifest.json is missing: was the snapshot taken with another shard count?") from None
    for name, table in tables.items():
        if name not in manifest["rows"]:
            table.clear()  # a table added since the snapshot: starts empty
            continue
        with fs.open(f"{folder}/{name}.arrow", "rb") as f:
            try:
                got = table.restore(f)
            except SnapshotError as exc:
                raise SnapshotError(f"{folder}/{name}.arrow: {exc}") from None
        if got != manifest["rows"][name]:
            raise SnapshotError(f"{folder}/{name}.arrow holds {got} rows, its manifest says {manifest['rows'][name]}")
    return manifest


def snapshot_all(cfg: FlywheelConfig, examples_offsets: dict | None = None, log_to_mlflow: bool = True) -> dict:
    """Snapshot every training shard (in parallel), mark the snapshot complete, log it to MLflow.

    Returns:
      The complete manifest: snapshot id, HDFS URI, and each shard's manifest.
    """
    from paramserver.client import PSClient

    client = PSClient.from_config(cfg, role="training")
    snapshot_id = new_snapshot_id()
    root = cfg.paramserver.snapshot_dir
    body = json.dumps({"snapshot_id": snapshot_id, "root": root, "examples_offsets": examples_offsets or {}}).encode()
    try:
        with ThreadPoolExecutor(max_workers=client.shards) as pool:
            shards = list(pool.map(lambda s: json.loads(client.call_action(s, "snapshot", body, timeout_s=1800)), range(client.shards)))
    finally:
        client.close()
    manifest = {"snapshot_id": snapshot_id, "uri": f"{cfg.hdfs_uri}{root}/{snapshot_id}",
                "shards": shards, "tables": sorted(cfg.paramserver.tables)}
    fs = webhdfs(cfg)
    with fs.open(f"{root}/{snapshot_id}/{COMPLETE}", "wb") as f:
        f.write(json.dumps(manifest, indent=2).encode())
    if log_to_mlflow:
        _log(cfg, manifest)
    return manifest


def _log(cfg: FlywheelConfig, manifest: dict) -> None:
    """Log a complete snapshot to MLflow; an MLflow outage is logged, not raised (the
    snapshot itself is already safe on HDFS)."""
    try:
        _log_run(cfg, manifest)
    except Exception as exc:  # noqa: BLE001
        logging.getLogger(__name__).warning("snapshot %s not logged to MLflow: %s", manifest["snapshot_id"], exc)


def _log_run(cfg: FlywheelConfig, manifest: dict) -> None:
    """One run per snapshot in experiment ``paramserver-snapshots``, through the client API, so
    it never touches the caller's active run (the online trainer's long run)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri(cfg))
    experiment = client.get_experiment_by_name("paramserver-snapshots")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("paramserver-snapshots")
    run = client.create_run(experiment_id, run_name=manifest["snapshot_id"])
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(f"rows_{name}", sum(s["rows"].get(name, 0) for s in manifest["shards"]), now, 0)
                 for name in manifest["tables"]],
        params=[Param("shards", str(len(manifest["shards"]))), Param("tables", ",".join(manifest["tables"]))],
        tags=[RunTag("snapshot_uri", manifest["uri"]), RunTag("snapshot_id", manifest["snapshot_id"])])
    client.log_dict(run.info.run_id, manifest, "manifest.json")
    client.set_terminated(run.info.run_id)


def prune(fs, root: str, keep: int, max_age_days: float, protect: set[str], now: float | None = None) -> list[str]:
    """Delete the snapshots under ``root`` that retention no longer needs; returns their ids, oldest first.

    A complete snapshot goes when it is both beyond the newest ``keep`` complete ones and older
    than ``max_age_days``. A folder without ``_MANIFEST.json`` (a failed snapshot, or one being
    written) goes only when older than a day. Never deleted: the newest complete snapshot, an id
    in ``protect`` (e.g. a published model's lineage), a folder whose name is not a snapshot id.
    A complete snapshot loses its ``_MANIFEST.json`` first, so no reader restores a half-deleted one.

    Args:
      fs: an fsspec filesystem (WebHDFS on the stack).
      keep: how many of the newest complete snapshots to keep whatever their age (>= 1).
      max_age_days: complete snapshots younger than this are kept whatever their rank, days.
      protect: snapshot ids to keep whatever their rank and age.
      now: the current time, seconds since the epoch (default: the clock).
    """
    if keep < 1:
        raise ValueError(f"keep={keep}: at least the newest complete snapshot is kept, so keep >= 1")
    now = time.time() if now is None else now
    age = {i: now - t for i in snapshot_ids(fs, root) if (t := taken_at(i)) is not None}
    complete = [i for i in age if fs.exists(f"{root}/{i}/{COMPLETE}")]  # newest first
    doomed = [i for i in complete[keep:] if age[i] > max_age_days * DAY_S]
    doomed += [i for i in age if i not in complete and age[i] > DAY_S]
    doomed = sorted(set(doomed) - protect)
    for snapshot_id in doomed:
        if snapshot_id in complete:
            fs.rm(f"{root}/{snapshot_id}/{COMPLETE}")
        fs.rm(f"{root}/{snapshot_id}", recursive=True)
    return doomed


def lineage_snapshots(cfg: FlywheelConfig) -> set[str]:
    """Snapshot ids that MLflow model versions holding an alias (``champion``, ``challenger``)
    name in their ``snapshot_id`` tag: the sparse state a published model goes with.

    Raises:
      SnapshotError: MLflow did not answer (prune nothing rather than a published model's state).
    """
    from mlflow import MlflowClient

    client, ids, token = MlflowClient(tracking_uri(cfg)), set(), None
    try:
        while True:
            page = client.search_registered_models(page_token=token)
            for model in page:
                for version in set(model.aliases.values()):
                    if snapshot_id := client.get_model_version(model.name, version).tags.get(LINEAGE_TAG):
                        ids.add(snapshot_id)
            if not (token := page.token):
                return ids
    except Exception as exc:  # noqa: BLE001 -- any MLflow failure means "lineage unknown"
        raise SnapshotError(f"cannot read model lineage from MLflow at {cfg.mlflow_url} ({exc}); nothing pruned. "
                            "'make status' shows whether MLflow runs") from exc


def apply_retention(cfg: FlywheelConfig) -> list[str]:
    """Prune ``paramserver.snapshot_dir`` by ``paramserver.snapshot_keep`` and
    ``snapshot_max_age_days``, protecting published models' lineage and the newest snapshot the
    online trainer can replay ``joiner.examples_topic`` from; returns the deleted ids."""
    fs, root, ps = webhdfs(cfg), cfg.paramserver.snapshot_dir, cfg.paramserver
    protect = lineage_snapshots(cfg)
    if replayable := latest_with_offsets(fs, root, cfg.joiner.examples_topic):
        protect.add(replayable)
    return prune(fs, root, ps.snapshot_keep, ps.snapshot_max_age_days, protect)
