"""The real Kafka broker (KRaft): topics from config, produce/consume with a group, commits, and
its door: no client gets in without the SASL login (kafka.sasl)."""

import json
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError

from flywheel.secrets import kafka_args
from flywheel.stack.base import wait_until

pytestmark = pytest.mark.integration


def test_configured_topics_exist(stack):
    admin = KafkaAdminClient(**kafka_args(stack))
    try:
        described = {t["name"]: t for t in admin.describe_topics(list(stack.kafka.topics))}
    finally:
        admin.close()
    for name, topic in stack.kafka.topics.items():
        assert name in described, f"topic {name} was not created by `up`"
        assert len(described[name]["partitions"]) == topic.partitions


def test_the_door_refuses_a_client_without_the_login_or_with_a_wrong_password(stack):
    assert stack.kafka.sasl, "the test stack runs Kafka with its door on (the default)"
    log = stack.stack.logs / "kafka.log"
    refused = {"no login": ({"bootstrap_servers": stack.kafka_bootstrap}, "during SASL handshake"),
               "wrong password": ({**kafka_args(stack), "sasl_plain_password": "not-the-password"},
                                  "Authentication failed: Invalid username or password")}
    for what, (args, why) in refused.items():
        before = log.read_text(errors="replace").count(why)
        with pytest.raises(KafkaTimeoutError, match="Unable to bootstrap"):
            consumer = KafkaConsumer(**args, request_timeout_ms=3000, bootstrap_timeout_ms=5000)
            consumer.topics()  # reached only if the broker let it in
        # the broker refused it, and says why (not a client that merely failed to connect)
        assert wait_until(lambda: log.read_text(errors="replace").count(why) > before, 15, 0.2), \
            f"{what}: the broker's log has no new {why!r}"
    consumer = KafkaConsumer(**kafka_args(stack))
    try:
        assert set(stack.kafka.topics) <= consumer.topics()
    finally:
        consumer.close()


def test_produce_consume_with_group_commits_offsets(stack):
    topic, group = f"it-{uuid.uuid4().hex[:8]}", f"it-group-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(**kafka_args(stack))
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    producer = KafkaProducer(**kafka_args(stack), acks="all")
    for i in range(50):
        producer.send(topic, key=f"user-{i % 7}".encode(), value=json.dumps({"i": i}).encode())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        topic, **kafka_args(stack), group_id=group,
        auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=10_000,
    )
    seen = []
    for msg in consumer:
        seen.append(json.loads(msg.value)["i"])
        if len(seen) == 50:
            break
    consumer.commit()
    consumer.close()
    assert sorted(seen) == list(range(50))

    offsets = admin.list_group_offsets(group)[group]
    admin.close()
    committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
    assert sum(committed.values()) == 50, committed
    assert set(committed) == {0, 1}
