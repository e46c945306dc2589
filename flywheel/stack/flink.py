"""Flink: a standalone session cluster (JobManager + TaskManager) from PyFlink's distribution.

PyFlink's install is hard-linked from uv's cache, so nothing is edited in place: the cluster
reads a rendered ``FLINK_CONF_DIR`` and a ``FLINK_LIB_DIR`` of symlinks (PyFlink's own lib
jars, ``flink-python`` from ``opt/`` for thread mode, and the Maven-fetched Kafka connector and
Parquet format).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from flywheel.config import REPO_ROOT, FlywheelConfig, deep_merge
from flywheel.secrets import flink_auth
from flywheel.stack import flink_door, flink_tls, hdfs, kerberos
from flywheel.stack.base import FLINK_PYTHON, JVM_DIR, VENV, Program, Service, http_json, jars, require, write

SITE_PACKAGES = VENV / "flink" / "lib" / "python3.11" / "site-packages"
PYFLINK_HOME = SITE_PACKAGES / "pyflink"


def flink_config(cfg: FlywheelConfig) -> dict:
    """config.yaml: PyFlink's defaults (JVM flags for Java 17) overlaid with the stack's settings."""
    bind, f, home = cfg.stack.bind, cfg.flink, cfg.stack.root / "flink"
    jm, tm = cfg.stack.host_of("flink_jobmanager"), cfg.stack.host_of("flink_taskmanager")
    defaults = yaml.safe_load((PYFLINK_HOME / "conf" / "config.yaml").read_text()) or {}
    pythonpath = f"{SITE_PACKAGES}:{REPO_ROOT}"
    ours = {
        "jobmanager": {
            "bind-host": bind, "rpc": {"address": jm, "port": f.jobmanager_rpc_port},
            "memory": {"process": {"size": f.jobmanager_memory}},
        },
        "taskmanager": {
            "bind-host": bind, "host": tm, "numberOfTaskSlots": f.task_slots,
            "rpc": {"port": f.taskmanager_rpc_port}, "data": {"port": f.taskmanager_data_port},
            "memory": {"process": {"size": f.taskmanager_memory}},
        },
        # clients dial rest.port; with flink.require_login that is the door (flywheel/stack/flink_door.py)
        # and the JobManager itself listens on loopback only, on rest.bind-port
        "rest": {"address": jm, "bind-address": "127.0.0.1", "port": f.rest_port, "bind-port": str(f.rest_backend_port)}
        if f.require_login else {"address": jm, "bind-address": bind, "port": f.rest_port},
        "blob": {"server": {"port": str(f.blob_port)}},
        # JM and TM each take one port of this range for the metrics query service.
        "metrics": {"internal": {"query-service": {"port": f"{f.metrics_query_port}-{f.metrics_query_port + 1}"}},
                    "fetcher": {"update-interval": 2000}},  # REST metrics at most 2 s old (default 10 s)
        "parallelism": {"default": f.parallelism},
        "state": {"backend": {"type": "rocksdb", "incremental": True}},
        "execution": {"checkpointing": {
            "dir": f"{cfg.hdfs_uri}{f.checkpoint_dir}",
            "savepoint-dir": f"{cfg.hdfs_uri}{f.savepoint_dir}",
            "interval": f"{int(f.checkpoint_interval_s * 1000)} ms",
            # kept when a job is cancelled or lost with its JobManager (no HA here): the joiner
            # keeper (flywheel/joiner_job.py) resubmits the joiner from the newest one
            "externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        }},
        "io": {"tmp": {"dirs": str(home / "tmp")}},
        "web": {"tmpdir": str(home / "tmp" / "web")},
        "blob.storage.directory": str(home / "tmp" / "blob"),
        # Thread mode: the Python worker runs inside the TaskManager (pemja); process mode would
        # open Beam gRPC listeners on every interface.
        "python": {
            "executable": str(FLINK_PYTHON), "client": {"executable": str(FLINK_PYTHON)},
            "execution-mode": "thread", "pythonpath": pythonpath,
        },
    }
    security: dict = {}
    if cfg.kerberos.enabled:
        # HDFS (checkpoints, savepoints, the examples' Parquet files) asks for Kerberos: the
        # JobManager, the TaskManagers and the CLI log in from the client keytab, each for itself
        security = {
            "kerberos": {"login": {"keytab": str(kerberos.client_keytab(cfg)),
                                   "principal": kerberos.client_principal(cfg), "use-ticket-cache": False}},
            "delegation": {"tokens": {"enabled": False}},
        }
        java_opts = defaults.get("env", {}).get("java", {}).get("opts", {}).get("all", "")
        ours["env"] = {"java": {"opts": {"all": f"{java_opts} {kerberos.java_options(cfg)}".strip()}}}
    if f.internal_tls:
        security["ssl"] = {"internal": flink_tls.settings(cfg)}
    if security:
        ours["security"] = security
    merged = deep_merge(defaults, ours)
    if not tm:  # "" : each TaskManager advertises its own address (containers that scale)
        del merged["taskmanager"]["host"]
    return merged


def lib_dir(cfg: FlywheelConfig) -> Path:
    return cfg.stack.root / "flink" / "lib"


def environment(cfg: FlywheelConfig) -> dict[str, str]:
    """Environment for the cluster daemons and for the `flink` CLI that submits jobs."""
    return {
        "FLINK_CONF_DIR": str(cfg.stack.root / "flink" / "conf"),
        "FLINK_LIB_DIR": str(lib_dir(cfg)),
        "FLINK_LOG_DIR": str(cfg.stack.logs / "flink"),
        "FLINK_PID_DIR": str(cfg.stack.root / "flink" / "pid"),
        "HADOOP_CONF_DIR": str(hdfs.conf_dir(cfg)),
        "HADOOP_CLASSPATH": jars("hadoop-client"),
        "PYFLINK_CLIENT_EXECUTABLE": str(FLINK_PYTHON),
        "PATH": f"{FLINK_PYTHON.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }


def _link_libs(cfg: FlywheelConfig) -> None:
    target = lib_dir(cfg)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    sources = [
        *sorted((PYFLINK_HOME / "lib").glob("*.jar")),
        *sorted((PYFLINK_HOME / "opt").glob("flink-python-*.jar")),
        *sorted((JVM_DIR / "flink-lib").glob("*.jar")),
    ]
    for jar in sources:
        (target / jar.name).symlink_to(jar)


def prepare_cluster(cfg: FlywheelConfig, make_keys: bool = True) -> None:
    """The JobManager's and TaskManagers' files: config (mode 0600: it holds the internal TLS
    password), masters/workers, logging, lib links, and the internal TLS key (made here unless
    ``make_keys`` is off: a TaskManager's container reads the JobManager's)."""
    home = cfg.stack.root / "flink"
    conf = home / "conf"
    require(PYFLINK_HOME / "bin" / "jobmanager.sh", "PyFlink (the .venv/flink environment)")
    jars("flink-lib")
    if cfg.flink.internal_tls:
        flink_tls.ensure(cfg, make=make_keys)
    write(conf / "config.yaml", yaml.safe_dump(flink_config(cfg), sort_keys=False), mode=0o600)
    write(conf / "masters", f"{cfg.stack.host_of('flink_jobmanager')}:{cfg.flink.rest_port}\n")
    write(conf / "workers", f"{cfg.stack.host_of('flink_taskmanager') or cfg.stack.host}\n")
    for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties",
                 "log4j-session.properties", "logback.xml", "logback-console.xml"):
        shutil.copyfile(PYFLINK_HOME / "conf" / name, conf / name)
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    (cfg.stack.logs / "flink").mkdir(parents=True, exist_ok=True)
    _link_libs(cfg)


def service(cfg: FlywheelConfig) -> Service:
    bin_dir = PYFLINK_HOME / "bin"
    env = environment(cfg)

    def prepare() -> None:
        prepare_cluster(cfg)
        if cfg.flink.require_login:
            flink_door.prepare(cfg)

    def healthy() -> bool:
        overview = http_json(f"{cfg.flink_url}/overview", auth=flink_auth(cfg))
        return bool(overview) and overview.get("taskmanagers", 0) >= 1

    return Service(
        name="flink",
        url=cfg.flink_url,
        programs=[
            Program("flink-jobmanager", [str(bin_dir / "jobmanager.sh"), "start-foreground"], env=env),
            Program("flink-taskmanager", [str(bin_dir / "taskmanager.sh"), "start-foreground"], env=env),
            *([flink_door.program(cfg)] if cfg.flink.require_login else []),
        ],
        prepare=prepare,
        healthy=healthy,
        ports=[cfg.flink.rest_port, *([cfg.flink.rest_backend_port] if cfg.flink.require_login else []),
               cfg.flink.jobmanager_rpc_port, cfg.flink.taskmanager_rpc_port,
               cfg.flink.taskmanager_data_port, cfg.flink.blob_port],
        requires=["hdfs"],
    )
