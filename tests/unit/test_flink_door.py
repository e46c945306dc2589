"""The door of Flink's REST API (flywheel/stack/flink_door.py): the JobManager listens on loopback
behind Caddy's basic auth, and every client logs in: the `flink` CLI through
FLINK_REST_CLIENT_HEADERS, the Python helpers with requests' auth."""

import base64
import subprocess

import pytest

from flywheel import flinkjobs, secrets
from flywheel.stack import flink, flink_door


@pytest.fixture
def cfg(state_cfg):
    return state_cfg


def test_the_jobmanager_listens_on_loopback_behind_the_door_and_on_the_clients_port_without_it(cfg):
    rest = flink.flink_config(cfg)["rest"]
    assert (rest["bind-address"], rest["bind-port"], rest["port"]) == ("127.0.0.1", "8091", 8081)
    off = cfg.model_copy(update={"flink": cfg.flink.model_copy(update={"require_login": False})})
    rest = flink.flink_config(off)["rest"]
    assert (rest["bind-address"], rest["port"]) == ("127.0.0.1", 8081) and "bind-port" not in rest
    assert [p.name for p in flink.service(off).programs] == ["flink-jobmanager", "flink-taskmanager"]


def test_the_caddyfile_asks_for_the_login_and_forwards_to_the_jobmanager(cfg):
    text = flink_door.caddyfile(cfg, "$2a$14$hash")
    assert "admin off" in text and ":8081 {" in text and "bind 127.0.0.1" in text
    assert "basicauth {\n\t\tflywheel $2a$14$hash\n\t}" in text
    assert "reverse_proxy 127.0.0.1:8091" in text


def test_the_password_is_hashed_from_stdin_and_never_stored(cfg, monkeypatch):
    if not flink_door.shutil.which("caddy"):
        pytest.skip("caddy is not installed (make setup installs it)")
    monkeypatch.setenv("FLYWHEEL_FLINK_PASSWORD", "door-password")
    flink_door.prepare(cfg)
    path = flink_door.home(cfg) / "Caddyfile"
    text = path.read_text()
    assert "door-password" not in text and "flywheel $2a$" in text and oct(path.stat().st_mode)[-3:] == "600"


def test_submit_hands_the_cli_its_logins_in_the_environment_never_on_the_command_line(cfg, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_KAFKA_PASSWORD", "kafka-pw")
    monkeypatch.setenv("FLYWHEEL_FLINK_PASSWORD", "flink-pw")
    seen = {}

    def run(cmd, **kwargs):
        seen.update(cmd=cmd, env=kwargs["env"])
        return subprocess.CompletedProcess(cmd, 0, "Job has been submitted with JobID " + "0" * 32, "")

    monkeypatch.setattr(flinkjobs.subprocess, "run", run)
    assert flinkjobs.submit(cfg, flink.REPO_ROOT / "streaming/jobs/joiner.py", flinkjobs.kafka_argv(cfg)) == "0" * 32
    assert "kafka-pw" not in " ".join(seen["cmd"]) and "flink-pw" not in " ".join(seen["cmd"])
    assert seen["env"]["FLYWHEEL_KAFKA_PASSWORD"] == "kafka-pw"
    token = base64.b64encode(b"flywheel:flink-pw").decode()
    assert seen["env"]["FLINK_REST_CLIENT_HEADERS"] == f"Authorization:Basic {token}"
    assert secrets.flink_auth(cfg) == ("flywheel", "flink-pw")
    monkeypatch.setenv("FLYWHEEL_KAFKA_PASSWORD_JOINER", "joiner-pw")  # the joiner's own login (kafka.acls)
    flinkjobs.submit(cfg, flink.REPO_ROOT / "streaming/jobs/joiner.py", flinkjobs.kafka_argv(cfg, "joiner"))
    assert seen["cmd"][seen["cmd"].index("--kafka-user") + 1] == "joiner" and "joiner-pw" not in " ".join(seen["cmd"])
    assert seen["env"]["FLYWHEEL_KAFKA_PASSWORD"] == "joiner-pw"
    off = cfg.model_copy(update={"flink": cfg.flink.model_copy(update={"require_login": False})})
    assert secrets.flink_client_headers(off) == {} and secrets.flink_auth(off) is None
