"""The Flink jobs' Kafka login (streaming/jobs/kafka_login.py): the password comes from the
environment of `flink run`, never its command line, and the login names the connector's shaded
module."""

import argparse

import pytest

from flywheel import flinkjobs
from flywheel.config import load_config
from streaming.jobs import kafka_login


def test_the_login_properties_name_the_shaded_module_and_take_the_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_KAFKA_PASSWORD", "pw")
    props = kafka_login.properties("flywheel")
    assert props["security.protocol"] == "SASL_PLAINTEXT" and props["sasl.mechanism"] == "PLAIN"
    assert props["sasl.jaas.config"] == ("org.apache.flink.kafka.shaded.org.apache.kafka.common.security.plain."
                                         'PlainLoginModule required username="flywheel" password="pw";')
    assert kafka_login.table_options("flywheel")["properties.sasl.mechanism"] == "PLAIN"
    assert kafka_login.properties("") == {} and kafka_login.table_options("") == {}


def test_a_user_without_the_password_in_the_environment_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("FLYWHEEL_KAFKA_PASSWORD", raising=False)
    with pytest.raises(SystemExit, match="FLYWHEEL_KAFKA_PASSWORD"):
        kafka_login.properties("flywheel")


def test_job_arguments_carry_the_user_but_never_the_password(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_KAFKA_PASSWORD", "never-on-argv")
    cfg = load_config(files=[], environ={"FLYWHEEL__STACK__STATE_DIR": str(tmp_path)})
    argv = flinkjobs.kafka_argv(cfg)
    parser = argparse.ArgumentParser()
    kafka_login.add_arguments(parser)
    args = parser.parse_args(argv)
    assert (args.bootstrap, args.kafka_user) == (cfg.kafka_bootstrap, "flywheel")
    assert "never-on-argv" not in " ".join(argv)
    off = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"sasl": False})})
    assert parser.parse_args(flinkjobs.kafka_argv(off)).kafka_user == ""
