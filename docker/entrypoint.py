"""Container entrypoint: prepare one program of the local stack as `make up` does, then exec it.

Usage (the images' ENTRYPOINT; compose passes the program name as the command)::

    entrypoint.py PROGRAM [EXTRA-ARGS...]   # kafka, hdfs-namenode, flink-jobmanager, mlflow, ...
    entrypoint.py COMMAND [ARGS...]         # anything else is exec'd as is, e.g. `flywheel status`

Programs, their files and their addresses all come from ``flywheel.stack.*`` and the config:
``FLYWHEEL_CONFIG=config/docker.yaml`` makes every daemon bind 0.0.0.0 and dial the others by
compose service name. Nothing rendered is edited here.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # the Flink, Airflow and JVM envs do not install flywheel
    sys.path.insert(0, str(REPO_ROOT))

from flywheel.config import ConfigError, FlywheelConfig, load_config  # noqa: E402
from flywheel.stack.base import Program, StackError, write  # noqa: E402

# program -> the flywheel.stack module whose service runs it. Only that one service is built:
# base.services(cfg) builds all of them, and each needs its own image's jars.
PROGRAMS = {
    "kafka": "kafka", "kdc": "kerberos", "hdfs-namenode": "hdfs", "hdfs-datanode": "hdfs",
    "flink-jobmanager": "flink", "flink-taskmanager": "flink", "flink-door": "flink", "mlflow": "mlflow_server",
    "airflow-api-server": "airflow", "airflow-scheduler": "airflow", "airflow-dag-processor": "airflow",
    "ps-training-0": "paramserver", "ps-serving-0": "paramserver",  # more shards: docker/README.md
}
ONE_SHOTS = ("airflow-db-migrate", "stack-init")


def hadoop_conf(cfg: FlywheelConfig, daemon: bool = False) -> None:
    """Write HADOOP_CONF_DIR (and SPARK_CONF_DIR) as the HDFS service's prepare does, without
    formatting a NameNode or making TLS keys (the kdc container made them, in the hdfs-tls volume)."""
    from flywheel.stack import hdfs

    hdfs.write_conf(cfg, daemon)


def prepare(cfg: FlywheelConfig, name: str) -> Program:
    """Prepare program ``name`` (a key of PROGRAMS) as the local stack does, and return it."""
    service = importlib.import_module(f"flywheel.stack.{PROGRAMS[name]}").service(cfg)
    if cfg.kerberos.enabled:
        from flywheel.stack import kerberos

        kerberos.write_client_conf(cfg)  # every container finds the realm (keytabs: compose volumes)
    if name == "kdc":
        from flywheel.stack import hdfs_tls

        service.prepare()  # the realm's database and every keytab, each in its own volume
        hdfs_tls.ensure(cfg)  # one CA for the whole stack, made here once (hdfs-tls volume)
    elif name == "hdfs-datanode":
        hadoop_conf(cfg, daemon=True)  # not service.prepare(): it would also format a NameNode in the data volume
    elif name.startswith("airflow-"):
        # not service.prepare(): it runs `airflow db migrate`, which airflow-db-migrate did once
        from flywheel.stack import airflow

        if not (airflow.home(cfg) / "airflow.cfg").exists():
            raise StackError("airflow.cfg is missing: the airflow-db-migrate service must run first")
        hadoop_conf(cfg)  # HADOOP_CONF_DIR of the scheduler's spark-submit tasks
    elif name == "flink-door":
        from flywheel.stack import flink_door

        flink_door.prepare(cfg)  # the login's hash; the door needs nothing of the cluster's
    elif name.startswith("flink-"):
        from flywheel.stack import flink

        # not service.prepare(): the door's file is the door container's; the JobManager makes
        # the cluster's internal TLS key, the TaskManagers read it from their shared volume
        flink.prepare_cluster(cfg, make_keys=name == "flink-jobmanager")
        hadoop_conf(cfg)  # hdfs:// checkpoints; locally the HDFS service wrote it
    else:
        service.prepare()
    program = next(p for p in service.programs if p.name == name)
    if name == "mlflow":
        # MLflow answers only Host headers of localhost and private IPs unless told otherwise.
        allowed = ",".join(h for n in (cfg.stack.host_of("mlflow"), "localhost", "127.0.0.1")
                           for h in (n, f"{n}:*"))
        program = replace(program, command=[*program.command, "--allowed-hosts", allowed])
    return program


def _secret(name: str) -> str:
    if not os.environ.get(name):
        raise StackError(f"{name} is not set: put it in docker/.env (see docker/env.example)")
    return os.environ[name]


def airflow_db_migrate(cfg: FlywheelConfig) -> None:
    """One-shot: the secrets from the environment, then the Airflow service's prepare
    (airflow.cfg, `airflow db migrate`), which uses them instead of generating its own."""
    from flywheel.stack import airflow

    home = airflow.home(cfg)
    write(home / "secrets" / "jwt_secret", _secret("AIRFLOW_JWT_SECRET"), mode=0o600)
    write(home / "secrets" / "api_secret_key", _secret("AIRFLOW_API_SECRET_KEY"), mode=0o600)
    write(home / "passwords.json", json.dumps({cfg.airflow.admin_user: _secret("AIRFLOW_ADMIN_PASSWORD")}), mode=0o600)
    airflow.service(cfg).prepare()
    print(f"airflow db migrate: done ({home / 'airflow.cfg'})")


def stack_init(cfg: FlywheelConfig) -> None:
    """One-shot: the Kafka and HDFS services' post_start steps (topics, ACLs, HDFS folders). Their
    service objects cannot be built in this image (no Kafka/HDFS jars), so the steps are called."""
    from flywheel.hdfs import namenode_ready, webhdfs
    from flywheel.stack import kafka_acls
    from flywheel.stack.base import wait_until
    from flywheel.topics import ensure_topics

    print(f"kafka topics created: {ensure_topics(cfg) or 'none (all exist)'}")
    print(f"kafka acls: {kafka_acls.ensure(cfg, prune=True)}")
    # the DataNode's health check is a TCP probe (HDFS's pages ask for a login): wait here until
    # the NameNode has left safe mode with a live DataNode, or MKDIRS fails on a restart
    if not wait_until(lambda: namenode_ready(cfg), cfg.stack.startup_timeout_s, interval_s=2):
        raise StackError(f"HDFS at {cfg.webhdfs_url} is not out of safe mode with a live DataNode after "
                         f"{cfg.stack.startup_timeout_s:.0f}s: see the hdfs-namenode and hdfs-datanode logs")
    fs = webhdfs(cfg)
    for path in (cfg.hdfs.root, cfg.flink.checkpoint_dir, cfg.flink.savepoint_dir):
        fs.makedirs(path, exist_ok=True)
    print(f"hdfs folders ready: {cfg.hdfs.root}, {cfg.flink.checkpoint_dir}, {cfg.flink.savepoint_dir}")


def main(argv: list[str]) -> None:
    """Prepare and exec the named program, run a one-shot, or exec any other command unchanged.

    Args:
      argv: a program name (PROGRAMS or ONE_SHOTS) and extra arguments, or any command line.
    """
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: entrypoint.py PROGRAM [EXTRA-ARGS...] | COMMAND [ARGS...]\n"
              "programs: " + ", ".join([*PROGRAMS, *ONE_SHOTS]))
        return
    name, extra = argv[0], argv[1:]
    if name not in PROGRAMS and name not in ONE_SHOTS:
        os.execvp(name, argv)
    try:
        cfg = load_config()
        if name in ONE_SHOTS:
            (airflow_db_migrate if name == "airflow-db-migrate" else stack_init)(cfg)
            return
        program = prepare(cfg, name)
    except (ConfigError, StackError) as exc:
        sys.exit(f"entrypoint {name}: {exc}")
    sys.stdout.flush()
    os.chdir(program.directory)
    os.execvpe(program.command[0], [*program.command, *extra], {**os.environ, **program.env})


if __name__ == "__main__":
    main(sys.argv[1:])
