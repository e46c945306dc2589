"""Config: defaults, overlays, env overrides, and clear errors for bad values."""

from pathlib import Path

import pytest

from flywheel.config import ConfigError, load_config


def test_defaults_bind_loopback_and_every_port_is_distinct():
    cfg = load_config(files=[], environ={})
    assert cfg.stack.host == "127.0.0.1"
    ports = list(cfg.all_ports().values())
    assert len(ports) == len(set(ports)) >= 14
    assert cfg.kafka_bootstrap == "127.0.0.1:9092"


def test_test_overlay_moves_every_port_and_the_state_dir():
    base = load_config(files=[], environ={})
    test = load_config(files=[Path("config/test.yaml")], environ={})
    assert set(base.all_ports().values()).isdisjoint(test.all_ports().values())
    assert base.stack.root != test.stack.root


def test_env_override_is_typed():
    cfg = load_config(files=[], environ={"FLYWHEEL__FLINK__PARALLELISM": "1", "FLYWHEEL__KAFKA__PORT": "9192"})
    assert cfg.flink.parallelism == 1
    assert cfg.kafka.port == 9192


def test_wrong_value_names_key_value_and_fix():
    with pytest.raises(ConfigError) as err:
        load_config(files=[], environ={"FLYWHEEL__KAFKA__PORT": "not-a-port"})
    msg = str(err.value)
    assert "kafka.port" in msg and "'not-a-port'" in msg and "FLYWHEEL__KAFKA__PORT" in msg


def test_privileged_port_and_unknown_key_are_refused():
    with pytest.raises(ConfigError, match="outside 1024..65535"):
        load_config(files=[], environ={"FLYWHEEL__MLFLOW__PORT": "80"})
    with pytest.raises(ConfigError, match="kafka.prot"):
        load_config(files=[], environ={"FLYWHEEL__KAFKA__PROT": "9000"})


def test_two_services_on_one_port_is_refused():
    with pytest.raises(ConfigError, match="given to both"):
        load_config(files=[], environ={"FLYWHEEL__MLFLOW__PORT": "8080"})


def test_missing_or_malformed_overlay(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(files=[tmp_path / "nope.yaml"], environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(files=[bad], environ={})


def test_container_overlay_binds_all_and_dials_by_service_name():
    cfg = load_config(files=[], environ={
        "FLYWHEEL__STACK__BIND_HOST": "0.0.0.0", "FLYWHEEL__STACK__HOSTS__KAFKA": "kafka",
        "FLYWHEEL__STACK__HOSTS__HDFS_NAMENODE": "hdfs-namenode", "FLYWHEEL__SERVING__REQUIRE_API_KEY": "true"})
    assert cfg.stack.bind == "0.0.0.0"
    assert cfg.kafka_bootstrap == "kafka:9092"
    assert cfg.hdfs_uri == "hdfs://hdfs-namenode:8020"
    assert cfg.mlflow_url == "http://127.0.0.1:5000"  # not overridden: stack.host


def test_binding_off_loopback_needs_the_model_servers_api_key():
    with pytest.raises(ConfigError, match="serving.require_api_key: true"):
        load_config(files=[], environ={"FLYWHEEL__STACK__BIND_HOST": "0.0.0.0"})
    assert load_config(files=[], environ={"FLYWHEEL__STACK__BIND_HOST": "127.0.0.2"}).stack.bind == "127.0.0.2"


def test_bind_host_must_be_an_ip():
    with pytest.raises(ConfigError, match="stack.bind_host"):
        load_config(files=[], environ={"FLYWHEEL__STACK__BIND_HOST": "everywhere"})
