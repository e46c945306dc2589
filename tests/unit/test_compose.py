"""docker/: the compose file is valid, runs the local stack's services, publishes ports on
loopback only and at config/docker.yaml's numbers, requires its secrets from the environment,
and names Dockerfiles and entrypoint programs that exist; config/docker.yaml makes the stack's
own renderers bind 0.0.0.0 and dial services by compose name, and the entrypoint edits nothing.

`docker-compose config` validates and interpolates a compose file without a Docker engine.
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from flywheel.config import REPO_ROOT, load_config

COMPOSE_FILE = REPO_ROOT / "docker" / "compose.yaml"
DOCKER_COMPOSE = shutil.which("docker-compose")
SECRETS = {"FLYWHEEL_MLFLOW_PASSWORD": "test-mlflow", "FLYWHEEL_MLFLOW_SECRET_KEY": "test-mlflow-key",
           "AIRFLOW_ADMIN_PASSWORD": "test-admin", "AIRFLOW_JWT_SECRET": "test-jwt",
           "AIRFLOW_API_SECRET_KEY": "test-key", "FLYWHEEL_PS_TOKEN": "test-ps-token",
           "FLYWHEEL_KAFKA_PASSWORD": "test-kafka-password", "FLYWHEEL_FLINK_PASSWORD": "test-flink-password",
           "FLYWHEEL_HDFS_KEYSTORE_PASSWORD": "test-keystore-password",
           "FLYWHEEL_FLINK_INTERNAL_PASSWORD": "test-flink-internal-password",
           "FLYWHEEL_KAFKA_KEYSTORE_PASSWORD": "test-kafka-keystore-password",
           **{f"FLYWHEEL_KAFKA_PASSWORD_{role.upper()}": f"test-kafka-{role}" for role in
              ("serving", "joiner", "trainer", "paramserver", "monitor")}}
# service -> the config section (or port key, with its +shard ports) whose ports it listens on
# (None: publishes nothing)
SERVICES = {
    "kafka": "kafka", "kdc": "kerberos", "hdfs-namenode": "hdfs", "hdfs-datanode": "hdfs", "stack-init": None,
    "flink-jobmanager": "flink", "flink-taskmanager": None, "flink-door": None, "mlflow": "mlflow",
    "airflow-db-migrate": None, "airflow-api-server": "airflow", "airflow-scheduler": None,
    "airflow-dag-processor": None,
    "paramserver-training": "paramserver.training_port", "paramserver-serving": "paramserver.serving_port",
}
ONE_SHOTS = {"stack-init", "airflow-db-migrate"}

pytestmark = pytest.mark.skipif(
    DOCKER_COMPOSE is None,
    reason="docker-compose is not installed (scripts/setup.sh installs Debian's docker-compose)")


class PublishedPort(NamedTuple):
    service: str
    host_ip: str  # "" = every interface
    published: int | None  # None = an ephemeral host port
    target: int


def compose_config(path: Path, env: dict[str, str], tmp_path: Path) -> dict:
    """`docker-compose -f path config`, resolved and parsed.

    Args:
      path: the compose file.
      env: the only variables compose sees (besides PATH); an empty ``--env-file`` keeps a
        developer's docker/.env out of the test.
      tmp_path: where to put that empty env file.

    Raises:
      AssertionError: compose rejected the file; the message holds its stderr.
    """
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = subprocess.run(
        [DOCKER_COMPOSE, "-f", str(path), "--env-file", str(empty), "config"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **env})
    if proc.returncode != 0:
        raise AssertionError(f"docker-compose config failed (exit {proc.returncode}):\n{proc.stderr}")
    return yaml.safe_load(proc.stdout)


def published_ports(resolved: dict) -> list[PublishedPort]:
    """Every published port, from short ("IP:HOST:CONTAINER/proto") or long syntax."""
    out = []
    for name, svc in resolved["services"].items():
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                out.append(PublishedPort(name, port.get("host_ip", ""),
                                         int(port["published"]) if port.get("published") else None,
                                         int(port["target"])))
                continue
            parts = str(port).split("/")[0].split(":")
            host_ip, published = (parts[0] if len(parts) == 3 else ""), (parts[-2] if len(parts) > 1 else "")
            out.append(PublishedPort(name, host_ip, int(published) if published else None, int(parts[-1])))
    return out


def non_loopback_ports(resolved: dict) -> list[PublishedPort]:
    """Published ports reachable from other hosts (bound to anything but a loopback address)."""
    def loopback(ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip.strip("[]")).is_loopback
        except ValueError:
            return False

    return [p for p in published_ports(resolved) if not loopback(p.host_ip)]


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    return compose_config(COMPOSE_FILE, SECRETS, tmp_path_factory.mktemp("compose"))


def test_compose_runs_the_local_stack_services(resolved):
    assert set(resolved["services"]) == set(SERVICES)
    for name, svc in resolved["services"].items():
        assert svc.get("restart") == ("no" if name in ONE_SHOTS else "unless-stopped"), name
        assert name in ONE_SHOTS or "healthcheck" in svc, f"{name} has no healthcheck"
        assert svc["environment"]["FLYWHEEL_CONFIG"] == "config/docker.yaml", name
        assert f"{REPO_ROOT / 'config'}:/opt/flywheel/config:ro" in svc["volumes"], name


def test_published_ports_bind_loopback_only(resolved):
    assert published_ports(resolved), "the compose file publishes no port at all"
    assert non_loopback_ports(resolved) == []


def test_a_port_on_every_interface_is_caught(tmp_path):
    bad = tmp_path / "compose.yaml"
    bad.write_text(yaml.safe_dump({"services": {"svc": {"image": "busybox:1.36", "ports": [
        "127.0.0.1:8080:8080", "9092:9092", "7000", {"target": 9870, "published": 9870}]}}}))
    caught = non_loopback_ports(compose_config(bad, {}, tmp_path))
    assert sorted(p.target for p in caught) == [7000, 9092, 9870]


def test_published_ports_match_config_docker_yaml(resolved):
    cfg = load_config(files=[REPO_ROOT / "config" / "docker.yaml"], environ={})
    for port in published_ports(resolved):
        section = SERVICES[port.service]
        assert section, f"{port.service} publishes {port.target} but should publish nothing"
        ports = {v for k, v in cfg.all_ports().items()
                 if k == section or k.startswith((section + ".", section + "+"))}
        assert port.target in ports, f"{port.service}: {port.target} is not a {section} port in config/docker.yaml"
        assert port.published == port.target, f"{port.service}: host port {port.published} != {port.target}"


def docker_module(name: str):
    """Import docker/<name>.py (not a package: the images run these files as scripts)."""
    spec = importlib.util.spec_from_file_location(f"docker_{name}", REPO_ROOT / "docker" / f"{name}.py")
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)  # registered first: dataclasses resolve annotations there
    return module


def test_every_dockerfile_and_program_exists(resolved):
    entrypoint = docker_module("entrypoint")
    for name, svc in resolved["services"].items():
        build = svc["build"]
        assert Path(build["context"]) == REPO_ROOT, name
        dockerfile = Path(build["context"]) / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        assert (dockerfile.parent / (dockerfile.name + ".dockerignore")).is_file(), name
        program = svc["command"][0]
        assert program in entrypoint.PROGRAMS or program in entrypoint.ONE_SHOTS, f"{name}: unknown program {program}"
        for arg in svc.get("healthcheck", {}).get("test", []):
            if arg.startswith("/opt/flywheel/"):
                assert (REPO_ROOT / arg.removeprefix("/opt/flywheel/")).is_file(), f"{name}: {arg}"


def test_secrets_are_required_not_defaulted(tmp_path):
    for missing in SECRETS:
        env = {k: v for k, v in SECRETS.items() if k != missing}
        with pytest.raises(AssertionError, match=missing):
            compose_config(COMPOSE_FILE, env, tmp_path)


@pytest.fixture
def docker_cfg(tmp_path):
    """config/docker.yaml as the containers read it, with the state dir under tmp_path."""
    return load_config(files=[REPO_ROOT / "config" / "docker.yaml"],
                       environ={"FLYWHEEL__STACK__STATE_DIR": str(tmp_path)})


def test_rendered_files_use_service_names_and_bind_the_container(docker_cfg):
    from flywheel.stack import flink, hdfs, kafka

    props = dict(line.split("=", 1) for line in kafka.server_properties(docker_cfg).splitlines()
                 if line and not line.startswith("#"))
    assert props["listeners"] == "CLIENT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093"
    assert props["advertised.listeners"] == "CLIENT://kafka:9092"
    assert props["listener.security.protocol.map"] == "CLIENT:SASL_SSL,CONTROLLER:SASL_SSL"
    assert props["ssl.keystore.location"] == str(docker_cfg.stack.root / "kafka" / "tls" / "server" / "kafka.p12")
    assert props["controller.quorum.voters"] == "1@kafka:9093"
    files = hdfs.site_files(docker_cfg)
    assert "<value>hdfs://hdfs-namenode:8020</value>" in files["core-site.xml"]
    site = files["hdfs-site.xml"]
    for prop, value in {"dfs.namenode.rpc-address": "hdfs-namenode:8020",
                        "dfs.namenode.rpc-bind-host": "0.0.0.0",
                        "dfs.namenode.http-bind-host": "0.0.0.0",
                        "dfs.datanode.address": "0.0.0.0:9866",
                        "dfs.datanode.hostname": "hdfs-datanode"}.items():
        assert f"<name>{prop}</name><value>{value}</value>" in site, prop
    assert "127.0.0.1" not in files["core-site.xml"] + site
    conf = flink.flink_config(docker_cfg)
    assert conf["jobmanager"]["rpc"]["address"] == conf["rest"]["address"] == "flink-jobmanager"
    assert conf["jobmanager"]["bind-host"] == "0.0.0.0"
    assert conf["rest"]["bind-address"] == "127.0.0.1"  # behind flink-door, in the JobManager's network
    assert conf["taskmanager"]["bind-host"] == "0.0.0.0" and "host" not in conf["taskmanager"]
    assert conf["execution"]["checkpointing"]["dir"] == "hdfs://hdfs-namenode:8020/flywheel/flink/checkpoints"


def test_parameter_servers_bind_the_container_and_are_dialled_by_service_name(docker_cfg):
    assert docker_cfg.stack.bind == "0.0.0.0"  # the PS listens on grpc+tcp://<bind>:<port + shard>
    assert docker_cfg.stack.host_of("paramserver_training") == "paramserver-training"
    assert docker_cfg.stack.host_of("paramserver_serving") == "paramserver-serving"
    assert docker_cfg.paramserver.deltas_topic in docker_cfg.kafka.topics  # stack-init creates it


def test_every_program_is_one_of_its_services_programs(docker_cfg):
    for name, module in docker_module("entrypoint").PROGRAMS.items():
        service = importlib.import_module(f"flywheel.stack.{module}").service(docker_cfg)
        assert name in [p.name for p in service.programs], f"{name} is not a program of flywheel.stack.{module}"


def test_entrypoint_prepares_without_patching(docker_cfg, tmp_path):
    """File-only preparations (no process is started, no storage formatted)."""
    from flywheel.stack import flink

    entrypoint = docker_module("entrypoint")
    with pytest.raises(entrypoint.StackError, match="start flink-jobmanager first"):
        entrypoint.prepare(docker_cfg, "flink-taskmanager")  # the JobManager makes the internal key
    entrypoint.prepare(docker_cfg, "flink-jobmanager")
    entrypoint.prepare(docker_cfg, "flink-taskmanager")
    written = yaml.safe_load((tmp_path / "flink" / "conf" / "config.yaml").read_text())
    assert written == flink.flink_config(docker_cfg)  # as the stack code rendered it, unedited
    assert "hdfs://hdfs-namenode:8020" in (tmp_path / "hdfs" / "conf" / "core-site.xml").read_text()

    program = entrypoint.prepare(docker_cfg, "hdfs-datanode")
    assert program.command[-1].endswith(".DataNode")
    assert (tmp_path / "hdfs" / "conf" / "hdfs-site.xml").is_file()
    assert not (tmp_path / "hdfs" / "name").exists(), "the DataNode container formatted a NameNode"

    program = entrypoint.prepare(docker_cfg, "mlflow")
    assert program.command[program.command.index("--host") + 1] == "0.0.0.0"
    allowed = program.command[program.command.index("--allowed-hosts") + 1].split(",")
    assert {"mlflow", "mlflow:*", "localhost:*", "127.0.0.1:*"} <= set(allowed)

    for role in ("training", "serving"):
        program = entrypoint.prepare(docker_cfg, f"ps-{role}-0")
        assert program.command[-4:] == ["ps", role, "--shard", "0"]
        assert Path(program.command[0]).name == "flywheel"

    with pytest.raises(entrypoint.StackError, match="airflow-db-migrate"):
        entrypoint.prepare(docker_cfg, "airflow-scheduler")


def test_healthcheck_conditions():
    check = docker_module("healthcheck").check_condition
    doc = {"beans": [{"FSState": "Operational", "NumLiveDataNodes": 0}]}
    assert check(doc, "beans.0.FSState=Operational") is None
    assert check(doc, "beans.0.NumLiveDataNodes>=1") == "beans.0.NumLiveDataNodes is 0, want >=1"
    assert check(doc, "beans.1.FSState=Operational") == "beans.1.FSState is absent"


def test_healthcheck_tcp_probe():
    import socket

    probe = docker_module("healthcheck").probe
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert probe(f"tcp://127.0.0.1:{port}", []) is None
    assert probe(f"tcp://127.0.0.1:{port}", []).startswith(f"tcp://127.0.0.1:{port}: ")  # now closed


def test_mlflow_and_its_clients_get_the_mlflow_login(resolved):
    for name in ("mlflow", "airflow-scheduler"):
        assert resolved["services"][name]["environment"]["FLYWHEEL_MLFLOW_PASSWORD"] == "test-mlflow", name
    assert resolved["services"]["mlflow"]["environment"]["FLYWHEEL_MLFLOW_SECRET_KEY"] == "test-mlflow-key"


def test_the_parameter_servers_and_their_clients_share_the_token(resolved):
    for name in ("paramserver-training", "paramserver-serving", "airflow-scheduler"):
        assert resolved["services"][name]["environment"]["FLYWHEEL_PS_TOKEN"] == "test-ps-token", name
        assert resolved["services"][name]["environment"]["FLYWHEEL_CONFIG"] == "config/docker.yaml", name


def test_flinks_rest_api_is_reached_only_through_the_door(resolved, docker_cfg):
    from flywheel.stack import flink

    door, jm = resolved["services"]["flink-door"], resolved["services"]["flink-jobmanager"]
    assert door["network_mode"] == "service:flink-jobmanager" and door["command"] == ["flink-door"]
    assert door["environment"]["FLYWHEEL_FLINK_PASSWORD"] == "test-flink-password"
    assert resolved["services"]["airflow-scheduler"]["environment"]["FLYWHEEL_FLINK_PASSWORD"] == "test-flink-password"
    assert "FLYWHEEL_FLINK_PASSWORD" not in jm.get("environment", {})
    rest = flink.flink_config(docker_cfg)["rest"]  # the JobManager: loopback only, behind the door's port
    assert (rest["bind-address"], rest["bind-port"], rest["port"]) == ("127.0.0.1", "8091", 8081)
    assert [p.target for p in published_ports(resolved) if p.service == "flink-jobmanager"] == [8081]


def _mounts(svc: dict) -> dict[str, tuple[str, bool]]:
    """volume name -> (where, read-only) of a resolved service's named volumes."""
    out = {}
    for volume in svc.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            out[parts[0]] = (parts[1], len(parts) > 2 and parts[2] == "ro")
        elif volume.get("type") == "volume":
            out[volume["source"]] = (volume["target"], bool(volume.get("read_only")))
    return out


def test_hdfs_keytabs_and_keys_are_mounted_only_where_needed(resolved):
    from flywheel.stack import hdfs_tls, kerberos

    docker_cfg = load_config(files=[REPO_ROOT / "config" / "docker.yaml"], environ={})  # the images' state dir
    assert docker_cfg.kerberos.enabled and docker_cfg.stack.host_of("kdc") == "kdc"
    where = {"kerberos-db": str(kerberos.home(docker_cfg) / "db"),
             "keytab-hdfs": str(kerberos.keytab(docker_cfg, "hdfs").parent),
             "keytab-client": str(kerberos.client_keytab(docker_cfg).parent),
             "hdfs-ca-key": str(hdfs_tls.home(docker_cfg) / "ca"),
             "hdfs-tls": str(hdfs_tls.home(docker_cfg) / "server"),
             "hdfs-ca": str(hdfs_tls.ca_pem(docker_cfg).parent)}
    holders: dict[str, dict[str, bool]] = {name: {} for name in where}
    for name, svc in resolved["services"].items():
        for volume, (target, read_only) in _mounts(svc).items():
            if volume in where:
                assert target == where[volume], (name, volume, target)
                holders[volume][name] = read_only
    assert holders["kerberos-db"] == {"kdc": False}
    assert holders["keytab-hdfs"] == {"kdc": False, "hdfs-namenode": True, "hdfs-datanode": True}
    clients = {"stack-init", "flink-jobmanager", "flink-taskmanager", "paramserver-training", "paramserver-serving",
               "airflow-scheduler"}
    assert holders["keytab-client"] == {"kdc": False, **{c: True for c in clients}}
    assert holders["hdfs-ca-key"] == {"kdc": False}
    assert holders["hdfs-tls"] == {"kdc": False, "hdfs-namenode": True, "hdfs-datanode": True}
    python_clients = {"stack-init", "paramserver-training", "paramserver-serving", "airflow-scheduler"}
    assert holders["hdfs-ca"] == {"kdc": False, "hdfs-namenode": True, "hdfs-datanode": True,
                                  **{c: True for c in python_clients}}
    with_password = {n for n, svc in resolved["services"].items()
                     if "FLYWHEEL_HDFS_KEYSTORE_PASSWORD" in (svc.get("environment") or {})}
    assert with_password == {"kdc", "hdfs-namenode", "hdfs-datanode"}


def test_the_kdc_container_makes_the_realm_for_the_compose_names(docker_cfg, monkeypatch):
    from flywheel.stack import hdfs_tls, kerberos

    monkeypatch.setenv("FLYWHEEL_HDFS_KEYSTORE_PASSWORD", "test-keystore-password")
    program = docker_module("entrypoint").prepare(docker_cfg, "kdc")
    assert program.command[1:] == ["-n", "-r", "FLYWHEEL.LOCAL"]
    assert "kdc = kdc:7088" in kerberos.krb5_conf(docker_cfg).read_text()
    assert "kdc_listen = 0.0.0.0:7088" in (kerberos.home(docker_cfg) / "kdc.conf").read_text()
    out = subprocess.run([kerberos.tool("klist"), "-k", str(kerberos.keytab(docker_cfg, "hdfs"))], capture_output=True,
                         text=True, check=True).stdout
    assert {"hdfs/hdfs-namenode@FLYWHEEL.LOCAL", "hdfs/hdfs-datanode@FLYWHEEL.LOCAL",
            "HTTP/hdfs-namenode@FLYWHEEL.LOCAL"} <= set(out.split())
    cert = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(hdfs_tls.home(docker_cfg) / "server" / "hdfs.pem")],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:hdfs-namenode" in cert and "DNS:hdfs-datanode" in cert


def test_only_the_flink_cluster_holds_its_internal_key(resolved):
    from flywheel.stack import flink_tls

    docker_cfg = load_config(files=[REPO_ROOT / "config" / "docker.yaml"], environ={})
    assert docker_cfg.flink.internal_tls
    holders = {name: _mounts(svc)["flink-tls"] for name, svc in resolved["services"].items() if "flink-tls" in _mounts(svc)}
    folder = str(flink_tls.keystore(docker_cfg).parent)
    assert holders == {"flink-jobmanager": (folder, False), "flink-taskmanager": (folder, True)}
    with_password = {n for n, svc in resolved["services"].items()
                     if "FLYWHEEL_FLINK_INTERNAL_PASSWORD" in (svc.get("environment") or {})}
    assert with_password == {"flink-jobmanager", "flink-taskmanager"}


def test_kafka_keeps_its_key_and_its_clients_get_only_its_ca(resolved):
    from flywheel.stack import kafka_tls

    docker_cfg = load_config(files=[REPO_ROOT / "config" / "docker.yaml"], environ={})
    assert docker_cfg.kafka.tls
    mounts = {name: _mounts(svc) for name, svc in resolved["services"].items()}
    assert mounts["kafka"]["kafka"] == (str(docker_cfg.stack.root / "kafka"), False)  # ca/ and server/ inside
    holders = {name: m["kafka-ca"] for name, m in mounts.items() if "kafka-ca" in m}
    public = str(kafka_tls.ca_pem(docker_cfg).parent)
    clients = {"stack-init", "flink-jobmanager", "flink-taskmanager", "paramserver-training", "paramserver-serving",
               "airflow-scheduler"}  # every container with a Kafka client (the Flink jobs run in the cluster)
    assert holders == {"kafka": (public, False), **{c: (public, True) for c in clients}}
    with_password = {n for n, svc in resolved["services"].items()
                     if "FLYWHEEL_KAFKA_KEYSTORE_PASSWORD" in (svc.get("environment") or {})}
    assert with_password == {"kafka"}


def test_the_kafka_container_makes_its_key_for_its_compose_name(docker_cfg, monkeypatch):
    from flywheel.stack import kafka_tls

    monkeypatch.setenv("FLYWHEEL_KAFKA_KEYSTORE_PASSWORD", "test-kafka-keystore-password")
    monkeypatch.setenv("FLYWHEEL_KAFKA_PASSWORD", "test-kafka-password")
    docker_module("entrypoint").prepare(docker_cfg, "kafka")
    cert = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                           str(kafka_tls.home(docker_cfg) / "server" / "kafka.pem")],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:kafka" in cert and kafka_tls.ca_pem(docker_cfg).exists()


def test_each_container_holds_only_its_own_kafka_login(resolved):
    from flywheel import secrets

    logins = {name: sorted(k for k in (svc.get("environment") or {}) if k.startswith("FLYWHEEL_KAFKA_PASSWORD"))
              for name, svc in resolved["services"].items()}
    every = sorted([secrets.KAFKA_PASSWORD.env, *(s.env for s in secrets.KAFKA_ROLE_PASSWORDS.values())])
    assert logins["kafka"] == every  # SASL/PLAIN: the broker checks each login against its own list
    assert logins["stack-init"] == ["FLYWHEEL_KAFKA_PASSWORD"]  # the super user: topics and ACLs
    assert logins["paramserver-training"] == logins["paramserver-serving"] == ["FLYWHEEL_KAFKA_PASSWORD_PARAMSERVER"]
    assert logins["airflow-scheduler"] == ["FLYWHEEL_KAFKA_PASSWORD_MONITOR"]
    assert {n for n, held in logins.items() if held} == {"kafka", "stack-init", "paramserver-training",
                                                         "paramserver-serving", "airflow-scheduler"}
    broker = resolved["services"]["kafka"]["environment"]
    for name, held in logins.items():  # each client's login is one the broker accepts
        env = resolved["services"][name]["environment"] if held else {}
        assert all(env[var] == broker[var] for var in held), name
        assert not held or env["FLYWHEEL_CONFIG"] == "config/docker.yaml", name
