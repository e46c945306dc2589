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

import json
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

from flywheel.config import FlywheelConfig
from flywheel.hdfs import webhdfs
from paramserver.snapshot import SnapshotError
from paramserver.table import EmbeddingTable

COMPLETE = "_MANIFEST.json"


def new_snapshot_id() -> str:
    """Sortable by time: ``20261124T014655Z-3fa9c1``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


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
    if not fs.exists(root):
        return None
    ids = sorted((p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)), reverse=True)
    return next((i for i in ids if fs.exists(f"{root}/{i}/{COMPLETE}")), None)


def latest_with_offsets(fs, root: str, topic: str) -> str | None:
    """The newest complete snapshot whose every shard records offsets of ``topic``."""
    if not fs.exists(root):
        return None
    for snapshot_id in sorted((p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)), reverse=True):
        try:
            manifest = json.loads(fs.cat_file(f"{root}/{snapshot_id}/{COMPLETE}"))
        except FileNotFoundError:
            continue
        if all(topic in s.get("examples_offsets", {}) for s in manifest["shards"]):
            return snapshot_id
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
    import mlflow

    mlflow.set_tracking_uri(cfg.mlflow_url)
    mlflow.set_experiment("paramserver-snapshots")
    with mlflow.start_run(run_name=manifest["snapshot_id"]):
        mlflow.set_tags({"snapshot_uri": manifest["uri"], "snapshot_id": manifest["snapshot_id"]})
        mlflow.log_params({"shards": len(manifest["shards"]), "tables": ",".join(manifest["tables"])})
        for name in manifest["tables"]:
            mlflow.log_metric(f"rows_{name}", sum(s["rows"].get(name, 0) for s in manifest["shards"]))
        mlflow.log_dict(manifest, "manifest.json")
