"""The Flink jobs' Kafka login (streaming/jobs/kafka_login.py): the password comes from the
environment of `flink run`, never its command line, and the login names the connector's shaded
module."""

import zipfile
from pathlib import Path

import pytest

from flywheel.config import REPO_ROOT
from streaming.jobs import kafka_login


def test_the_login_properties_name_the_shaded_module_and_take_the_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_KAFKA_PASSWORD", "pw")
    props = kafka_login.properties("flywheel")
    assert props["security.protocol"] == "SASL_PLAINTEXT" and props["sasl.mechanism"] == "PLAIN"
    assert props["sasl.jaas.config"] == ("org.apache.flink.kafka.shaded.org.apache.kafka.common.security.plain."
                                         'PlainLoginModule required username="flywheel" password="pw";')
    assert kafka_login.table_options("flywheel")["properties.sasl.mechanism"] == "PLAIN"
    assert kafka_login.properties("") == {"security.protocol": "PLAINTEXT"}
    assert kafka_login.table_options("") == {"properties.security.protocol": "PLAINTEXT"}


def test_with_a_ca_the_jobs_speak_tls_and_verify_the_broker_against_it(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_KAFKA_PASSWORD", "pw")
    props = kafka_login.properties("flywheel", "/state/kafka/tls/public/ca.pem")
    assert props["security.protocol"] == "SASL_SSL"
    assert props["ssl.truststore.type"] == "PEM" and props["ssl.truststore.location"] == "/state/kafka/tls/public/ca.pem"
    assert "ssl.endpoint.identification.algorithm" not in props  # Kafka's default: check the host name
    assert kafka_login.properties("", "/ca.pem")["security.protocol"] == "SSL"


def test_a_user_without_the_password_in_the_environment_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("FLYWHEEL_KAFKA_PASSWORD", raising=False)
    with pytest.raises(SystemExit, match="FLYWHEEL_KAFKA_PASSWORD"):
        kafka_login.properties("flywheel")


def test_the_login_module_is_the_one_the_kafka_connector_jar_ships():
    jars = sorted((REPO_ROOT / "build" / "jvm" / "flink-lib").glob("flink-sql-connector-kafka-*.jar"))
    if not jars:
        pytest.skip("the Kafka connector jar is not fetched yet (make setup)")
    with zipfile.ZipFile(jars[-1]) as jar:
        assert kafka_login.LOGIN_MODULE.replace(".", "/") + ".class" in jar.namelist()


def test_every_kafka_client_logs_in_through_kafka_args():
    """A client made with bootstrap_servers= by hand would skip the login (kafka.sasl)."""
    bare = []
    for folder in ("flywheel", "serving", "paramserver", "pipelines", "simulator", "bench", "dags", "tests"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if path == Path(__file__).resolve():
                continue
            bare += [f"{path.relative_to(REPO_ROOT)}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1)
                     if "bootstrap_servers=" in line]
    assert bare == []
