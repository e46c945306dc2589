"""The real Kafka broker (KRaft): topics from config, produce/consume with a group, commits."""

import json
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

pytestmark = pytest.mark.integration


def test_configured_topics_exist(stack):
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    try:
        described = {t["name"]: t for t in admin.describe_topics(list(stack.kafka.topics))}
    finally:
        admin.close()
    for name, topic in stack.kafka.topics.items():
        assert name in described, f"topic {name} was not created by `up`"
        assert len(described[name]["partitions"]) == topic.partitions


def test_produce_consume_with_group_commits_offsets(stack):
    topic, group = f"it-{uuid.uuid4().hex[:8]}", f"it-group-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    for i in range(50):
        producer.send(topic, key=f"user-{i % 7}".encode(), value=json.dumps({"i": i}).encode())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        topic, bootstrap_servers=stack.kafka_bootstrap, group_id=group,
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
