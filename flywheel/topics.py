"""Kafka topics of the product, created from the config (idempotent)."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from flywheel.config import FlywheelConfig
from flywheel.secrets import kafka_args


def ensure_topics(cfg: FlywheelConfig) -> list[str]:
    """Create every topic named in ``cfg.kafka.topics`` that does not exist yet.

    Returns:
      The names of the topics created by this call.
    """
    admin = KafkaAdminClient(**kafka_args(cfg), client_id="flywheel-topics")
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name=name,
                num_partitions=t.partitions,
                replication_factor=1,
                topic_configs={"retention.ms": str(int(t.retention_hours * 3_600_000))},
            )
            for name, t in cfg.kafka.topics.items()
            if name not in existing
        ]
        if not wanted:
            return []
        try:
            admin.create_topics(wanted)
        except TopicAlreadyExistsError:
            pass
        return [t.name for t in wanted]
    finally:
        admin.close()
