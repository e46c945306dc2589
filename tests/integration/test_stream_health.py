"""Stream-health checks (flywheel/health.py) against the real Flink and Kafka of the test stack."""

import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from flywheel.health import HealthError, consumer_lag, freshness, joiner_running
from flywheel.secrets import kafka_args
from flywheel.stack import kafka_acls
from flywheel.stack.kafka_acls import Grant

pytestmark = pytest.mark.integration


def tuned(cfg, section: str, **values):
    """``cfg`` with some values of one section replaced."""
    return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=values)})


@pytest.fixture
def topic(stack):
    """A new two-partition topic, deleted afterwards."""
    name = f"it-health-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(**kafka_args(stack))
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    kafka_acls.allow(stack, {Grant("monitor", "TOPIC", name, "READ")})  # the checks log in as the monitor
    yield name
    admin.delete_topics([name])
    admin.close()


def test_joiner_running_fails_clearly_when_no_joiner_runs(stack):
    # topics no joiner job reads: no running job has this joiner's name
    cfg = tuned(stack, "joiner", features_topic=f"it-health-nobody-{uuid.uuid4().hex[:6]}")

    with pytest.raises(HealthError) as failed:
        joiner_running(cfg)

    message = str(failed.value)
    assert f"on Flink at {stack.flink_url}" in message, message
    assert "make joiner-start" in message or "make joiner-resume" in message, message


def test_consumer_lag_counts_records_past_the_committed_offsets(stack, topic):
    producer = KafkaProducer(**kafka_args(stack), acks="all")
    for i in range(30):
        producer.send(topic, key=b"k", value=b"%d" % i, partition=0 if i < 20 else 1)
    producer.flush()
    producer.close()
    group = f"it-health-{uuid.uuid4().hex[:6]}"
    consumer = KafkaConsumer(**kafka_args(stack), group_id=group, enable_auto_commit=False)
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(15, "", -1)})  # partition 1: never committed
    consumer.close()
    kafka_acls.allow(stack, {Grant("monitor", "GROUP", group, "DESCRIBE")})

    figures = consumer_lag(tuned(stack, "health", max_lag_records=15), {group: [topic]})

    assert figures["groups"][group] == {"topics": [topic], "lag": 15,
                                        "partitions": {f"{topic}/0": 5, f"{topic}/1": 10},
                                        "uncommitted": [f"{topic}/1"]}
    with pytest.raises(HealthError, match=f"group '{group}' is 15 records behind {topic}"):
        consumer_lag(tuned(stack, "health", max_lag_records=14), {group: [topic]})


def test_freshness_reads_the_newest_committed_record_only(stack, topic):
    cfg = tuned(stack, "health", max_example_age_s=900)
    with pytest.raises(HealthError, match=f"topic '{topic}' at Kafka {stack.kafka_bootstrap} holds no committed record"):
        freshness(cfg, topic)

    producer = KafkaProducer(**kafka_args(stack), transactional_id=f"it-health-{topic}")
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, key=b"k", value=b"committed an hour ago", partition=0,
                  timestamp_ms=int((time.time() - 3600) * 1000))
    producer.commit_transaction()
    producer.begin_transaction()
    for _ in range(40):  # more than the first tail window: the reader widens it past them
        producer.send(topic, key=b"k", value=b"aborted just now", partition=0)
    producer.flush()
    producer.abort_transaction()
    producer.close()

    with pytest.raises(HealthError, match=r"newest committed record on topic .* is 3,6\d\d s old .*limit 900 s"):
        freshness(cfg, topic)
    figures = freshness(tuned(stack, "health", max_example_age_s=7200), topic)
    assert 3600 <= figures["age_s"] < 3700, figures


def test_a_missing_topic_is_named(stack):
    with pytest.raises(HealthError, match="topic 'it-health-missing' does not exist"):
        freshness(stack, "it-health-missing")
