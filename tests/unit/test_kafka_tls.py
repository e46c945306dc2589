"""TLS of Kafka's listeners (flywheel/stack/kafka_tls.py): the broker's key made once with the
real keytool, signed by Kafka's own CA for the names clients dial, and named in the broker's
properties."""

import subprocess

import pytest

from flywheel import secrets
from flywheel.stack import kafka, kafka_tls
from flywheel.stack.base import StackError


@pytest.fixture
def cfg(state_cfg):
    return state_cfg


def test_the_broker_key_is_signed_for_the_names_clients_dial_and_made_once(cfg):
    kafka_tls.ensure(cfg)
    keys = kafka_tls.keys(cfg)
    pem = keys.home / "server" / "kafka.pem"
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(kafka_tls.ca_pem(cfg)), str(pem)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(pem)],
                          capture_output=True, text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    for private in (keys.keystore, keys.home / "ca" / "ca.p12"):
        assert oct(private.stat().st_mode)[-3:] == "600", private
    made = keys.keystore.read_bytes()
    kafka_tls.ensure(cfg)  # nothing changed: the same key
    assert keys.keystore.read_bytes() == made
    hosts = cfg.stack.hosts.model_copy(update={"kafka": "kafka"})
    moved = cfg.model_copy(update={"stack": cfg.stack.model_copy(update={"hosts": hosts})})
    kafka_tls.ensure(moved)  # a new host name: a new key, from the same CA
    assert keys.keystore.read_bytes() != made
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(pem)],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:kafka," in text and "CN = kafka\n" in text


def test_a_keystore_that_does_not_open_with_the_password_is_a_clear_error(cfg, monkeypatch):
    kafka_tls.ensure(cfg)
    monkeypatch.setenv(secrets.KAFKA_KEYSTORE_PASSWORD.env, "another-password")
    with pytest.raises(StackError, match=r"does not open with the keystore password \(environment "
                                         r"FLYWHEEL_KAFKA_KEYSTORE_PASSWORD\).*delete"):
        kafka_tls.ensure(cfg)


def test_both_listeners_speak_tls_with_the_broker_keystore(cfg, kafka_props):
    props, keys = kafka_props(cfg), kafka_tls.keys(cfg)
    assert props["listener.security.protocol.map"] == "CLIENT:SASL_SSL,CONTROLLER:SASL_SSL"
    assert props["ssl.keystore.location"] == str(keys.keystore) and props["ssl.keystore.type"] == "PKCS12"
    assert props["ssl.truststore.location"] == str(keys.truststore)
    assert props["ssl.keystore.password"] == props["ssl.truststore.password"] == keys.password
    off = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"tls": False})})
    assert kafka_props(off)["listener.security.protocol.map"] == "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    assert not any(key.startswith("ssl.") for key in kafka_props(off))


def test_a_keystore_password_unsafe_in_a_properties_file_is_refused(cfg, monkeypatch):
    monkeypatch.setenv(secrets.KAFKA_KEYSTORE_PASSWORD.env, "back\\slash")  # Java would read an escape
    with pytest.raises(ValueError, match="FLYWHEEL_KAFKA_KEYSTORE_PASSWORD.*backslash"):
        kafka.server_properties(cfg)
