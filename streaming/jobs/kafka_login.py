"""The Kafka login of the Flink jobs: SASL/PLAIN as ``--kafka-user``, the password taken from
the environment of ``flink run`` (``FLYWHEEL_KAFKA_PASSWORD``, set by flywheel.flinkjobs.submit),
never from the command line, which ``ps`` and the Flink UI show; with ``--kafka-ca``, over TLS,
the broker verified against that CA certificate (PEM; flywheel/stack/kafka_tls.py), which must
be readable at that path on the JobManager and the TaskManagers.

The properties name the Kafka connector's shaded login module: the Flink Kafka connector jar
relocates the Kafka client under ``org.apache.flink.kafka.shaded``. Flink hides options whose
key holds ``jaas.config`` or ``password`` in its logs and UI.
"""

from __future__ import annotations

import argparse
import os

PASSWORD_ENV = "FLYWHEEL_KAFKA_PASSWORD"
LOGIN_MODULE = "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.plain.PlainLoginModule"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--kafka-user", default="",
                        help=f"SASL/PLAIN login at Kafka (password: ${PASSWORD_ENV}); empty: no login")
    parser.add_argument("--kafka-ca", default="",
                        help="TLS to Kafka, verified against this CA certificate (PEM); empty: no TLS")


def properties(user: str, ca: str = "") -> dict[str, str]:
    """The Kafka client properties of the login as ``user`` (none when ``user`` is empty), over
    TLS verified against ``ca`` (none when empty)."""
    props = {"security.protocol": f"{'SASL_' if user else ''}{'SSL' if ca else 'PLAINTEXT'}"}
    if ca:
        # the client checks the broker's host name against its certificate (Kafka's default, https)
        props.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": ca})
    if user:
        password = os.environ.get(PASSWORD_ENV)
        if not password:
            raise SystemExit(f"--kafka-user {user} needs the password in the environment variable {PASSWORD_ENV} "
                             "(flywheel.flinkjobs.submit sets it from the stack's secrets)")
        props.update({"sasl.mechanism": "PLAIN",
                      "sasl.jaas.config": f'{LOGIN_MODULE} required username="{user}" password="{password}";'})
    return props


def table_options(user: str, ca: str = "") -> dict[str, str]:
    """:func:`properties` as options of the Table API's Kafka connector."""
    return {f"properties.{key}": value for key, value in properties(user, ca).items()}
