"""Mutual TLS inside the Flink cluster (flywheel/stack/flink_tls.py): the key made once with the
real keytool, handed to the JobManager and TaskManagers in a config file only they read."""

import pytest
import yaml

from flywheel import secrets
from flywheel.stack import flink, flink_tls
from flywheel.stack.base import StackError


@pytest.fixture
def cfg(state_cfg):
    return state_cfg


def test_the_cluster_config_turns_internal_tls_on_with_one_key_as_keystore_and_truststore(cfg):
    internal = flink.flink_config(cfg)["security"]["ssl"]["internal"]
    password = secrets.value(cfg, secrets.FLINK_INTERNAL_PASSWORD)
    assert internal["enabled"] is True
    assert internal["keystore"] == internal["truststore"] == str(flink_tls.keystore(cfg))
    assert internal["keystore-password"] == internal["key-password"] == internal["truststore-password"] == password
    off = cfg.model_copy(update={"flink": cfg.flink.model_copy(update={"internal_tls": False})})
    assert "ssl" not in flink.flink_config(off).get("security", {})


def test_prepare_makes_the_key_once_and_writes_the_config_for_its_owner_only(cfg):
    flink.prepare_cluster(cfg)
    key, conf = flink_tls.keystore(cfg), cfg.stack.root / "flink" / "conf" / "config.yaml"
    assert oct(key.stat().st_mode)[-3:] == "600" and oct(conf.stat().st_mode)[-3:] == "600"
    assert yaml.safe_load(conf.read_text())["security"]["ssl"]["internal"]["keystore"] == str(key)
    made = key.read_bytes()
    flink.prepare_cluster(cfg)
    assert key.read_bytes() == made


def test_a_password_keytool_would_refuse_is_refused_with_its_source(cfg, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_FLINK_INTERNAL_PASSWORD", "short")
    with pytest.raises(StackError, match="at least 6 characters.*FLYWHEEL_FLINK_INTERNAL_PASSWORD"):
        flink_tls.ensure(cfg)


def test_a_taskmanager_never_makes_a_key_of_its_own(cfg):
    with pytest.raises(StackError, match="JobManager makes Flink's internal key"):
        flink_tls.ensure(cfg, make=False)
    assert not flink_tls.keystore(cfg).exists()


def test_a_key_that_does_not_open_with_the_password_says_what_to_do(cfg, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_FLINK_INTERNAL_PASSWORD", "first-password")
    flink_tls.ensure(cfg)
    monkeypatch.setenv("FLYWHEEL_FLINK_INTERNAL_PASSWORD", "second-password")
    with pytest.raises(StackError, match="does not open with Flink's internal password .*FLYWHEEL_FLINK_INTERNAL_PASSWORD"):
        flink_tls.ensure(cfg)
