"""TLS of Kafka's listeners (``kafka.tls``): Kafka's own CA and the broker's keystore.

With ``kafka.tls`` both listeners (clients, controller) speak SASL_SSL: the records and the
SASL/PLAIN password cross the network encrypted, and clients check the broker's name against
its certificate. The Kafka service's ``prepare`` makes, once (flywheel/stack/server_tls.py),
under ``<stack.root>/kafka/tls``: ``ca/`` (the CA's key), ``server/`` (the broker's keystore and
truststore) and ``public/ca.pem``, which every client verifies against: kafka-python's
``ssl_cafile`` (flywheel.secrets.kafka_args) and the Flink jobs' PEM truststore
(streaming/jobs/kafka_login.py). Kafka makes its own CA so that its container needs no other.

The password is flywheel/secrets.py KAFKA_KEYSTORE_PASSWORD.
"""

from __future__ import annotations

from pathlib import Path

from flywheel.config import FlywheelConfig
from flywheel.secrets import KAFKA_KEYSTORE_PASSWORD, properties_value, where
from flywheel.stack.server_tls import ServerKeys


def home(cfg: FlywheelConfig) -> Path:
    return cfg.stack.root / "kafka" / "tls"


def ca_pem(cfg: FlywheelConfig) -> Path:
    return home(cfg) / "public" / "ca.pem"


def keys(cfg: FlywheelConfig) -> ServerKeys:
    # the password is written into server.properties too: properties_value checks it is safe there
    return ServerKeys(home(cfg), "kafka", "Kafka", properties_value(cfg, KAFKA_KEYSTORE_PASSWORD),
                      where(cfg, KAFKA_KEYSTORE_PASSWORD))


def hosts(cfg: FlywheelConfig) -> list[str]:
    """The names the broker's certificate holds: its configured host (the one clients dial, first)
    and the loopback names, for programs on its own host."""
    host = cfg.stack.host_of("kafka")
    return [host, *sorted({"localhost", "127.0.0.1"} - {host})]


def ensure(cfg: FlywheelConfig) -> None:
    keys(cfg).ensure(hosts(cfg))


def server_properties(cfg: FlywheelConfig) -> str:
    """The broker's TLS properties: its keystore, and the truststore it checks the controller with."""
    k = keys(cfg)
    return f"""\
ssl.keystore.type=PKCS12
ssl.keystore.location={k.keystore}
ssl.keystore.password={k.password}
ssl.key.password={k.password}
ssl.truststore.type=PKCS12
ssl.truststore.location={k.truststore}
ssl.truststore.password={k.password}
ssl.client.auth=none
"""
