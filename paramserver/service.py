"""Run one parameter-server shard process: its tables, its Flight server and its sync thread.

    flywheel ps training --shard 0     # trainers' PS; publishes deltas every sync interval
    flywheel ps serving --shard 0      # model servers' PS; applies deltas from the topic
"""

from __future__ import annotations

import logging
import signal
import threading

from flywheel import secrets
from flywheel.config import FlywheelConfig
from flywheel.hdfs import webhdfs
from paramserver import snapshots
from paramserver.config import OPTIMIZERS, TableConfig
from paramserver.metrics import serve_metrics
from paramserver.server import ParamServer
from paramserver.sync import DeltaPublisher, DeltaSubscriber
from paramserver.table import EmbeddingTable

log = logging.getLogger(__name__)


def build_tables(cfg: FlywheelConfig, role: str) -> dict[str, EmbeddingTable]:
    """This role's tables from ``paramserver.tables`` in the config."""
    tables = {}
    shards = cfg.paramserver.shards
    for name, t in cfg.paramserver.tables.items():
        tables[name] = EmbeddingTable(TableConfig(
            name=name, dim=t.dim, optimizer=OPTIMIZERS[t.optimizer](learning_rate=t.learning_rate),
            initializer=t.initializer, init_scale=t.init_scale,
            admit_after=t.admit_after if role == "training" else 1,
            ttl_seconds=t.ttl_seconds if role == "training" else 0,  # serving follows training's tombstones
            track_changes=role == "training", expected_rows=t.expected_rows // shards,
        ))
    return tables


def _restore(cfg: FlywheelConfig, tables: dict, shard: int, which: str) -> dict | None:
    """Load this shard from a complete snapshot (``latest``, an id, or ``none``)."""
    if which == "none":  # HDFS (and its Kerberos login) is not needed to start empty
        log.info("starting empty (--restore none)")
        return None
    fs = webhdfs(cfg)
    root = cfg.paramserver.snapshot_dir
    snapshot_id = snapshots.resolve(fs, root, which)
    if snapshot_id is None:
        log.info("no snapshot to restore under %s: starting empty", root)
        return None
    manifest = snapshots.restore_shard(fs, root, snapshot_id, shard, tables)
    log.info("restored shard %d from snapshot %s: %s rows", shard, snapshot_id, manifest["rows"])
    return manifest


def _snapshotter(cfg: FlywheelConfig, tables: dict, shard: int, publisher: DeltaPublisher):
    def take(request: dict) -> dict:
        offset = publisher.flush_and_offset()
        return snapshots.write_shard(webhdfs(cfg), request["root"], request["snapshot_id"], shard, tables,
                                     offset, request.get("examples_offsets"))

    return take


def _restorer(cfg: FlywheelConfig, tables: dict, shard: int, publisher: DeltaPublisher):
    """The training shard's restore action: load a snapshot (or empty the shard), then reset
    serving replicas to the same state (DeltaPublisher.restore_and_reset)."""
    def reload(snapshot_id: str) -> dict | None:
        def restore() -> dict | None:
            # each table is loaded into a fresh native table and swapped in only when it
            # verified, so a corrupt snapshot leaves the shard as it was (EmbeddingTable.restore)
            manifest = None if snapshot_id == "none" else _restore(cfg, tables, shard, snapshot_id)
            if manifest is None:  # "none", or "latest" with no snapshot yet: empty, as serving will be
                for table in tables.values():
                    table.clear()
            return manifest

        return publisher.restore_and_reset(restore, cfg.paramserver.snapshot_dir)

    return reload


def _reloader(cfg: FlywheelConfig, tables: dict, shard: int):
    """What a serving shard does on a training reset: load the named snapshot (or the newest,
    for ``latest``; empty when there is none); returns its manifest."""
    def reload(snapshot_id: str, root: str) -> dict | None:
        fs = webhdfs(cfg)
        resolved = snapshots.resolve(fs, root, snapshot_id)
        if resolved is None:
            for table in tables.values():
                table.clear()
            return None
        return snapshots.restore_shard(fs, root, resolved, shard, tables)

    return reload


def run(cfg: FlywheelConfig, role: str, shard: int, restore: str = "latest",
        ready: threading.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT; the training role ships a last delta on the way out.

    Args:
      restore: snapshot to start from: ``latest`` (the newest complete one, if any), a
        snapshot id, or ``none``. A serving shard then consumes deltas from the snapshot's
        offset; without one, from the start of the topic.
    """
    ps = cfg.paramserver
    if not 0 <= shard < ps.shards:
        raise ValueError(f"shard {shard} is outside 0..{ps.shards - 1} (paramserver.shards = {ps.shards})")
    if not ps.tables:
        raise ValueError("paramserver.tables is empty in the config: nothing to serve")
    tables = build_tables(cfg, role)
    manifest = _restore(cfg, tables, shard, restore)
    location = f"grpc+tcp://{cfg.stack.bind}:{ps.port(role, shard)}"
    status: dict = {}
    if role == "training":
        sync = DeltaPublisher(tables, shard, secrets.kafka_args(cfg, "paramserver"), ps.deltas_topic, ps.sync_interval_s, status)
        # serving replicas drop whatever this shard shipped after the snapshot it started from;
        # before the Flight port opens, so no push can overtake the reset
        sync.restore_and_reset(lambda: manifest, ps.snapshot_dir)
    else:
        start = manifest["delta_offset"] if manifest else None
        sync = DeltaSubscriber(tables, shard, secrets.kafka_args(cfg, "paramserver"), ps.deltas_topic, status,
                               start_offset=start, on_reset=_reloader(cfg, tables, shard))
    server = ParamServer(location, tables, role, shard, ps.shards, token=secrets.ps_token(cfg))  # listens from here on
    server.restored, server.sync_status = manifest, status
    serve_metrics(server, cfg.stack.bind, ps.metrics_port_of(role, shard))
    if role == "training":
        server.snapshotter = _snapshotter(cfg, tables, shard, sync)
        server.restorer = _restorer(cfg, tables, shard, sync)
    sync.start()
    stopping = threading.Event()

    def stop(*_):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("%s PS shard %d/%d serving %s at %s", role, shard, ps.shards, sorted(tables), location)
    if ready:
        ready.set()
    server.serve()
    sync.stop()
