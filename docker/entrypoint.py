"""Container entrypoint: prepare one Flywheel service the way the local stack does, then exec it.

Usage (the images' ENTRYPOINT; compose passes the program name as the command)::

    entrypoint.py PROGRAM [EXTRA-ARGS...]   # kafka, hdfs-namenode, flink-jobmanager, mlflow, ...
    entrypoint.py COMMAND [ARGS...]         # anything else is exec'd as is, e.g. `flywheel status`

Each program's files (server.properties, core/hdfs-site.xml, Flink's config.yaml, airflow.cfg)
are rendered by the local stack's own code (``flywheel.stack.*``) from the same configuration
(``FLYWHEEL_CONFIG=config/docker.yaml``), so ports, heaps, paths and service settings cannot
drift between ``make up`` and compose. Only the network addresses are then changed for a
container network, in the rendered files themselves (what you read in the container is what
runs):

* daemons bind every interface *of their own container* (``FLYWHEEL_DOCKER_BIND``, default
  ``0.0.0.0``); compose publishes the user-facing ports on the host's 127.0.0.1 only;
* services reach each other by compose service name (``kafka``, ``hdfs-namenode``, ...).

Why here and not in the config: the schema's single ``stack.host`` is an IP address used both to
bind and to dial every service, which cannot describe one container per service.
"""

from __future__ import annotations

import configparser
import io
import json
import os
import socket
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # the Flink, Airflow and JVM envs do not install flywheel
    sys.path.insert(0, str(REPO_ROOT))

import yaml  # noqa: E402

from flywheel.config import ConfigError, FlywheelConfig, load_config  # noqa: E402
from flywheel.stack.base import AIRFLOW_BIN, Program, StackError, write  # noqa: E402


@dataclass(frozen=True)
class Network:
    """The address daemons bind, and the name each service is reached by.

    Defaults are the compose service names. ``FLYWHEEL_DOCKER_BIND`` and
    ``FLYWHEEL_DOCKER_HOST_<FIELD>`` (e.g. ``FLYWHEEL_DOCKER_HOST_KAFKA``) override them; set
    every one to 127.0.0.1 to run the programs on one machine without Docker.
    """

    bind: str = "0.0.0.0"
    kafka: str = "kafka"
    namenode: str = "hdfs-namenode"
    datanode: str = "hdfs-datanode"
    jobmanager: str = "flink-jobmanager"
    taskmanager: str = ""  # empty: each TaskManager advertises its container IP (so it scales)
    mlflow: str = "mlflow"
    airflow: str = "airflow-api-server"

    @classmethod
    def from_env(cls, environ: dict[str, str]) -> Network:
        def var(name: str) -> str:
            return "FLYWHEEL_DOCKER_BIND" if name == "bind" else f"FLYWHEEL_DOCKER_HOST_{name.upper()}"

        return cls(**{f.name: environ[var(f.name)] for f in fields(cls) if var(f.name) in environ})


# -- editing rendered files -----------------------------------------------------------------
def patch_properties(path: Path, values: dict[str, object]) -> None:
    """Set ``key=value`` lines of a Java properties file; keys it lacks are appended.

    Args:
      path: the rendered file, edited in place.
      values: property name -> new value.
    """
    todo = {k: str(v) for k, v in values.items()}
    out = []
    for line in path.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        out.append(f"{key}={todo.pop(key)}" if not line.startswith("#") and key in todo else line)
    out += [f"{k}={v}" for k, v in todo.items()]
    path.write_text("\n".join(out) + "\n")


def patch_hadoop_xml(path: Path, values: dict[str, object]) -> None:
    """Set ``<property>`` values of a Hadoop *-site.xml; properties it lacks are added.

    Args:
      path: the rendered file, edited in place.
      values: property name -> new value.
    """
    tree = ET.parse(path)
    root = tree.getroot()
    props = {p.findtext("name"): p for p in root.findall("property")}
    for name, value in values.items():
        prop = props.get(name)
        if prop is None:
            prop = ET.SubElement(root, "property")
            ET.SubElement(prop, "name").text = name
            ET.SubElement(prop, "value")
        prop.find("value").text = str(value)
    ET.indent(tree, space="  ")
    tree.write(path, encoding="utf-8", xml_declaration=True)


def replace_option(command: list[str], option: str, value: str) -> list[str]:
    """``command`` with the value after ``option`` replaced (the option must be present)."""
    i = command.index(option)
    return [*command[: i + 1], value, *command[i + 2:]]


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise StackError(f"{name} is not set: put it in docker/.env (see docker/env.example)")
    return value


# -- per-service preparation ----------------------------------------------------------------
def kafka_program(cfg: FlywheelConfig, net: Network) -> Program:
    """The combined broker+controller; storage is formatted on first start (by the stack code)."""
    from flywheel.stack import kafka

    svc = kafka.service(cfg)
    svc.prepare()
    k = cfg.kafka
    patch_properties(cfg.stack.root / "kafka" / "server.properties", {
        "listeners": f"PLAINTEXT://{net.bind}:{k.port},CONTROLLER://{net.bind}:{k.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{net.kafka}:{k.port}",
        "controller.quorum.voters": f"1@{net.kafka}:{k.controller_port}",
    })
    return svc.programs[0]


def hadoop_conf(cfg: FlywheelConfig, net: Network) -> Path:
    """HADOOP_CONF_DIR for the daemons and for hdfs:// clients (Flink), with container addresses."""
    from flywheel.stack import hdfs

    h, conf = cfg.hdfs, hdfs.conf_dir(cfg)
    for name, text in hdfs.site_files(cfg).items():
        write(conf / name, text)
    write(conf / "log4j.properties", hdfs.LOG4J)
    patch_hadoop_xml(conf / "core-site.xml", {"fs.defaultFS": f"hdfs://{net.namenode}:{h.namenode_port}"})
    patch_hadoop_xml(conf / "hdfs-site.xml", {
        "dfs.namenode.rpc-address": f"{net.namenode}:{h.namenode_port}",
        "dfs.namenode.rpc-bind-host": net.bind,
        "dfs.namenode.http-address": f"{net.namenode}:{h.namenode_http_port}",
        "dfs.namenode.http-bind-host": net.bind,
        "dfs.datanode.address": f"{net.bind}:{h.datanode_port}",
        "dfs.datanode.http.address": f"{net.bind}:{h.datanode_http_port}",
        "dfs.datanode.ipc.address": f"{net.bind}:{h.datanode_ipc_port}",
        # Clients (and WebHDFS redirects) reach the DataNode by this name.
        "dfs.datanode.hostname": net.datanode,
    })
    return conf


def hdfs_program(cfg: FlywheelConfig, net: Network, role: str) -> Program:
    """NameNode (formatted once, by the stack code) or DataNode; each has its own volume."""
    from flywheel.stack import hdfs

    svc = hdfs.service(cfg)
    if role == "namenode":
        svc.prepare()
    hadoop_conf(cfg, net)
    return {p.name: p for p in svc.programs}[f"hdfs-{role}"]


def flink_container_config(conf: dict, cfg: FlywheelConfig, net: Network) -> dict:
    """Flink's rendered config.yaml with the container network's addresses.

    Args:
      conf: the config.yaml rendered by ``flywheel.stack.flink``, as a dict (edited in place).
      cfg: the Flywheel config it was rendered from.
      net: the container network.

    Returns:
      ``conf``.
    """
    jm, tm, rest = conf["jobmanager"], conf["taskmanager"], conf["rest"]
    jm["bind-host"] = net.bind
    jm["rpc"]["address"] = net.jobmanager
    tm["bind-host"] = net.bind
    if net.taskmanager:
        tm["host"] = net.taskmanager
    else:
        tm.pop("host", None)
    rest["address"] = net.jobmanager
    rest["bind-address"] = net.bind
    checkpointing = conf["execution"]["checkpointing"]
    for key in ("dir", "savepoint-dir"):
        checkpointing[key] = checkpointing[key].replace(
            cfg.hdfs_uri, f"hdfs://{net.namenode}:{cfg.hdfs.namenode_port}", 1)
    return conf


def flink_program(cfg: FlywheelConfig, net: Network, role: str) -> Program:
    """JobManager or TaskManager in the foreground, from PyFlink's bin/ (thread execution mode)."""
    from flywheel.stack import flink

    hadoop_conf(cfg, net)
    svc = flink.service(cfg)
    svc.prepare()
    path = cfg.stack.root / "flink" / "conf" / "config.yaml"
    conf = flink_container_config(yaml.safe_load(path.read_text()), cfg, net)
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return {p.name: p for p in svc.programs}[f"flink-{role}"]


def mlflow_program(cfg: FlywheelConfig, net: Network) -> Program:
    """The tracking server; Host headers by service name are allowed (DNS-rebinding check)."""
    from flywheel.stack import mlflow_server

    svc = mlflow_server.service(cfg)
    svc.prepare()
    prog = svc.programs[0]
    allowed = ",".join(h for name in (net.mlflow, "localhost", "127.0.0.1") for h in (name, f"{name}:*"))
    command = replace_option(prog.command, "--host", net.bind) + ["--allowed-hosts", allowed]
    return replace(prog, command=command)


def airflow_env(cfg: FlywheelConfig, net: Network) -> dict[str, str]:
    """Settings every Airflow container shares; tasks reach the Execution API by service name."""
    from flywheel.stack import airflow

    return {
        **airflow.environment(cfg),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{net.airflow}:{cfg.airflow.port}/execution/",
    }


def airflow_migrate(cfg: FlywheelConfig, net: Network) -> Program:
    """One-shot: secrets from the environment, airflow.cfg (stack code), `airflow db migrate`."""
    from flywheel.stack import airflow

    home = airflow.home(cfg)
    _write_private(home / "secrets" / "jwt_secret", _env("AIRFLOW_JWT_SECRET"))
    _write_private(home / "secrets" / "api_secret_key", _env("AIRFLOW_API_SECRET_KEY"))
    _write_private(home / "passwords.json", json.dumps({cfg.airflow.admin_user: _env("AIRFLOW_ADMIN_PASSWORD")}))
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(airflow.airflow_cfg(cfg))
    ini["api"]["host"] = net.bind
    ini["core"]["execution_api_server_url"] = airflow_env(cfg, net)["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    text = io.StringIO()
    ini.write(text)
    _write_private(home / "airflow.cfg", "# Rendered by docker/entrypoint.py at airflow-db-migrate.\n" + text.getvalue())
    return Program("airflow-db-migrate", [str(AIRFLOW_BIN), "db", "migrate"], env=airflow_env(cfg, net))


def airflow_program(cfg: FlywheelConfig, net: Network, name: str) -> Program:
    """api-server, scheduler or dag-processor, on the airflow.cfg that airflow-db-migrate wrote."""
    from flywheel.stack import airflow

    if not (airflow.home(cfg) / "airflow.cfg").exists():
        raise StackError("airflow.cfg is missing: the airflow-db-migrate service must run first")
    hadoop_conf(cfg, net)  # HADOOP_CONF_DIR of spark-submit tasks
    prog = {p.name: p for p in airflow.service(cfg).programs}[name]
    command = replace_option(prog.command, "--host", net.bind) if "--host" in prog.command else prog.command
    return replace(prog, command=command, env=airflow_env(cfg, net))


def dialing(cfg: FlywheelConfig, host: str) -> FlywheelConfig:
    """``cfg`` whose stack.host is ``host``'s IP: how Python clients reach one named service.

    Args:
      cfg: the Flywheel config.
      host: a service name on the compose network, e.g. ``kafka``.

    Returns:
      A copy of ``cfg``; its derived URLs (``kafka_bootstrap``, ``webhdfs_url``...) dial ``host``.
    """
    ip = socket.gethostbyname(host)
    return cfg.model_copy(update={"stack": cfg.stack.model_copy(update={"host": ip})})


def stack_init(cfg: FlywheelConfig, net: Network) -> None:
    """One-shot, like the local stack's post-start steps: Kafka topics and HDFS folders."""
    from flywheel.hdfs import webhdfs
    from flywheel.topics import ensure_topics

    created = ensure_topics(dialing(cfg, net.kafka))
    print(f"kafka topics created: {created or 'none (all exist)'}")
    fs = webhdfs(dialing(cfg, net.namenode))
    for path in (cfg.hdfs.root, cfg.flink.checkpoint_dir, cfg.flink.savepoint_dir):
        fs.makedirs(path, exist_ok=True)
    print(f"hdfs folders ready: {cfg.hdfs.root}, {cfg.flink.checkpoint_dir}, {cfg.flink.savepoint_dir}")


PROGRAMS: dict[str, Callable[[FlywheelConfig, Network], Program | None]] = {
    "kafka": kafka_program,
    "hdfs-namenode": lambda c, n: hdfs_program(c, n, "namenode"),
    "hdfs-datanode": lambda c, n: hdfs_program(c, n, "datanode"),
    "flink-jobmanager": lambda c, n: flink_program(c, n, "jobmanager"),
    "flink-taskmanager": lambda c, n: flink_program(c, n, "taskmanager"),
    "mlflow": mlflow_program,
    "airflow-db-migrate": airflow_migrate,
    "airflow-api-server": lambda c, n: airflow_program(c, n, "airflow-api-server"),
    "airflow-scheduler": lambda c, n: airflow_program(c, n, "airflow-scheduler"),
    "airflow-dag-processor": lambda c, n: airflow_program(c, n, "airflow-dag-processor"),
    "stack-init": stack_init,
}


def main(argv: list[str]) -> None:
    """Prepare and exec the named program, or exec any other command unchanged.

    Args:
      argv: program name (a key of PROGRAMS) and extra arguments, or any command line.
    """
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: entrypoint.py PROGRAM [EXTRA-ARGS...] | COMMAND [ARGS...]\nprograms: " + ", ".join(PROGRAMS))
        return
    name, extra = argv[0], argv[1:]
    if name not in PROGRAMS:
        os.execvp(name, argv)
    try:
        program = PROGRAMS[name](load_config(), Network.from_env(dict(os.environ)))
    except (ConfigError, StackError) as exc:
        sys.exit(f"entrypoint {name}: {exc}")
    if program is None:
        return
    sys.stdout.flush()
    os.chdir(program.directory)
    os.execvpe(program.command[0], [*program.command, *extra], {**os.environ, **program.env})


if __name__ == "__main__":
    main(sys.argv[1:])
