"""Where the stack's secrets come from: the environment first, else a private file in the state
dir generated once; Airflow's logins are exactly the configured users, each with a password."""

import json
import stat

import pytest

from flywheel import secrets
from flywheel.config import load_config
from flywheel.stack import airflow


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    for name in [s.env for s in secrets.ALL] + ["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]:
        monkeypatch.setenv(name, "")  # recorded, so the teardown restores what this process had
        monkeypatch.delenv(name)
    return load_config(files=[], environ={"FLYWHEEL__STACK__STATE_DIR": str(tmp_path / "state"),
                                          "FLYWHEEL__AIRFLOW__USERS": json.dumps({"ana": "viewer", "bo": "op"})})


def test_a_secret_is_generated_once_into_a_private_file_and_the_environment_wins(cfg, monkeypatch):
    assert "created on first use" in secrets.where(cfg, secrets.API_KEY)
    first = secrets.value(cfg, secrets.API_KEY)
    path = secrets.folder(cfg) / secrets.API_KEY.name
    assert len(first) >= 24 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secrets.value(cfg, secrets.API_KEY) == first and secrets.where(cfg, secrets.API_KEY) == f"file {path}"
    monkeypatch.setenv("FLYWHEEL_API_KEY", "from-env")
    assert secrets.value(cfg, secrets.API_KEY) == "from-env"
    assert secrets.where(cfg, secrets.API_KEY) == "environment FLYWHEEL_API_KEY"


def test_an_empty_secret_file_is_a_clear_error(cfg):
    path = secrets.folder(cfg) / secrets.MLFLOW_PASSWORD.name
    path.parent.mkdir(parents=True)
    path.write_text("\n")
    with pytest.raises(ValueError, match="FLYWHEEL_MLFLOW_PASSWORD"):
        secrets.value(cfg, secrets.MLFLOW_PASSWORD)


def test_mlflow_clients_log_in_with_the_configured_user(cfg):
    import os

    uri = secrets.tracking_uri(cfg)
    assert uri == cfg.mlflow_url
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == cfg.mlflow.admin_user
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == secrets.value(cfg, secrets.MLFLOW_PASSWORD)


def test_the_api_key_is_only_asked_for_when_required(cfg):
    assert secrets.api_key(cfg) is None
    on = cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"require_api_key": True})})
    assert secrets.api_key(on) == secrets.value(cfg, secrets.API_KEY)


def test_airflow_logins_are_the_configured_users_each_with_its_own_password(cfg):
    rendered = airflow.airflow_cfg(cfg)
    line = next(x for x in rendered.splitlines() if x.startswith("simple_auth_manager_users"))
    assert sorted(line.split(" = ")[1].split(",")) == ["admin:admin", "ana:viewer", "bo:op"]
    pw = airflow.passwords(cfg)
    assert set(pw) == {"admin", "ana", "bo"} and len(set(pw.values())) == 3
    assert airflow.passwords(cfg) == pw  # kept, not regenerated
    path = airflow.home(cfg) / "passwords.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fewer = cfg.model_copy(update={"airflow": cfg.airflow.model_copy(update={"users": {}})})
    assert set(airflow.passwords(fewer)) == {"admin"}  # a user taken out of the config loses the login


def kafka_with(cfg, **fields):
    return cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update=fields)})


def test_kafka_clients_log_in_when_kafka_sasl_is_on_and_verify_the_broker_when_kafka_tls_is_on(cfg, monkeypatch):
    from flywheel.stack import kafka_tls

    args = secrets.kafka_args(cfg)
    assert args == {"bootstrap_servers": cfg.kafka_bootstrap, "security_protocol": "SASL_SSL",
                    "sasl_mechanism": "PLAIN", "sasl_plain_username": "flywheel",
                    "sasl_plain_password": secrets.value(cfg, secrets.KAFKA_PASSWORD),
                    "ssl_cafile": str(kafka_tls.ca_pem(cfg)), "ssl_check_hostname": True}
    assert secrets.kafka_args(kafka_with(cfg, tls=False))["security_protocol"] == "SASL_PLAINTEXT"
    assert secrets.kafka_args(kafka_with(cfg, sasl=False, acls=False)) == {
        "bootstrap_servers": cfg.kafka_bootstrap, "security_protocol": "SSL",
        "ssl_cafile": str(kafka_tls.ca_pem(cfg)), "ssl_check_hostname": True}
    off = kafka_with(cfg, sasl=False, tls=False, acls=False)
    assert secrets.kafka_args(off) == {"bootstrap_servers": cfg.kafka_bootstrap, "security_protocol": "PLAINTEXT"}
    assert secrets.kafka_password(off) is None
    monkeypatch.setenv("FLYWHEEL_KAFKA_PASSWORD", 'a"b')  # would end the JAAS value early
    with pytest.raises(ValueError, match="environment FLYWHEEL_KAFKA_PASSWORD.*quote"):
        secrets.kafka_args(cfg)
    monkeypatch.setenv("FLYWHEEL_KAFKA_PASSWORD", "pässwort")  # the broker would read its own login as Latin-1
    with pytest.raises(ValueError, match="non-ASCII"):
        secrets.kafka_args(cfg)


def test_the_broker_accepts_exactly_the_configured_login_on_both_listeners(cfg, monkeypatch):
    from flywheel.stack import kafka

    monkeypatch.setenv("FLYWHEEL_KAFKA_PASSWORD", "s3cret")
    props = dict(line.split("=", 1) for line in kafka.server_properties(cfg).splitlines()
                 if line and not line.startswith("#"))
    assert props["listener.security.protocol.map"] == "CLIENT:SASL_SSL,CONTROLLER:SASL_SSL"
    roles = "".join(f' user_{r}="{secrets.value(cfg, secrets.KAFKA_ROLE_PASSWORDS[r])}"' for r in secrets.KAFKA_ROLES)
    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required username="flywheel" '
            f'password="s3cret" user_flywheel="s3cret"{roles};')
    assert props["listener.name.client.plain.sasl.jaas.config"] == jaas
    assert props["listener.name.controller.plain.sasl.jaas.config"] == jaas
    off = kafka_with(cfg, sasl=False, tls=False, acls=False)
    assert "sasl" not in kafka.server_properties(off) and "CLIENT:PLAINTEXT" in kafka.server_properties(off)
    assert "ssl." not in kafka.server_properties(off)


def test_a_file_written_with_a_mode_never_keeps_another(tmp_path):
    from flywheel.stack.base import write

    path = tmp_path / "server.properties"
    path.write_text("old")
    path.chmod(0o644)  # rendered by an older version, readable by all
    write(path, "password=x", mode=0o600)
    assert path.read_text() == "password=x" and stat.S_IMODE(path.stat().st_mode) == 0o600
