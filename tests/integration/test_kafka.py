"""The real Kafka broker (KRaft): topics from config, produce/consume with a group, commits, and
its door: no client gets in without the SASL login (kafka.sasl) over TLS (kafka.tls), and no
client talks to a broker it cannot verify."""

import json
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError

from flywheel.secrets import kafka_args
from flywheel.stack import kafka_acls
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


def _refused(stack, args: dict, why: str, what: str) -> None:
    """A client with ``args`` never gets in, and the broker's log says ``why`` (the broker
    refused it: not a client that merely failed to connect)."""
    log = stack.stack.logs / "kafka.log"
    before = log.read_text(errors="replace").count(why)
    with pytest.raises(KafkaTimeoutError, match="Unable to bootstrap"):
        consumer = KafkaConsumer(**args, request_timeout_ms=3000, bootstrap_timeout_ms=5000)
        consumer.topics()  # reached only if the broker let it in
    assert wait_until(lambda: log.read_text(errors="replace").count(why) > before, 15, 0.2), \
        f"{what}: the broker's log has no new {why!r}"


def test_the_door_refuses_a_client_without_tls_without_the_login_or_with_a_wrong_password(stack):
    assert stack.kafka.sasl and stack.kafka.tls, "the test stack runs Kafka with its door on (the default)"
    tls = {k: v for k, v in kafka_args(stack).items() if not k.startswith("sasl")}
    plain = {k: v for k, v in kafka_args(stack).items() if not k.startswith("ssl")}
    refused = {"no tls, no login": ({"bootstrap_servers": stack.kafka_bootstrap}, "SSL handshake failed"),
               "the login without tls": ({**plain, "security_protocol": "SASL_PLAINTEXT"}, "SSL handshake failed"),
               "tls without the login": ({**tls, "security_protocol": "SSL"}, "during SASL handshake"),
               "wrong password": ({**kafka_args(stack), "sasl_plain_password": "not-the-password"},
                                  "Authentication failed: Invalid username or password")}
    for what, (args, why) in refused.items():
        _refused(stack, args, why, what)
    consumer = KafkaConsumer(**kafka_args(stack))
    try:
        assert set(stack.kafka.topics) <= consumer.topics()
    finally:
        consumer.close()


def test_a_client_does_not_talk_to_a_broker_its_ca_did_not_sign(stack):
    """A stranger on the broker's address (here: the real broker, checked against another CA, HDFS's)
    gets neither the password nor a record: the client gives up in the TLS handshake."""
    from flywheel.stack import hdfs_tls

    assert hdfs_tls.ca_pem(stack).exists()
    _refused(stack, {**kafka_args(stack), "ssl_cafile": str(hdfs_tls.ca_pem(stack))}, "SSL handshake failed",
             "a client trusting another CA")


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


def _denied(stack, role: str, operation: str, topic: str) -> bool:
    """Whether the broker's authorizer logged a refusal of ``role``'s ``operation`` on ``topic``."""
    return any(f"Principal = User:{role} is Denied operation = {operation}" in line and f"Topic:LITERAL:{topic}" in line
               for line in (stack.stack.logs / "kafka.log").read_text(errors="replace").splitlines())


def _write(stack, role: str, topic: str) -> None:
    # not idempotent: a user without WRITE on any topic would be refused a producer id first
    producer = KafkaProducer(**kafka_args(stack, role), acks="all", max_block_ms=5000, enable_idempotence=False)
    try:
        producer.send(topic, b"acl-probe").get(timeout=10)
    finally:
        producer.close()


def _read(stack, role: str, topic: str) -> None:
    consumer = KafkaConsumer(**kafka_args(stack, role), group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    try:
        consumer.end_offsets([TopicPartition(topic, 0)])  # as the trainer and the monitor begin: DESCRIBE
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        consumer.poll(timeout_ms=3000)
        consumer.poll(timeout_ms=3000)
    finally:
        consumer.close()


def test_each_component_may_do_what_it_does_and_nothing_else(stack):
    """Each component's own login (kafka.acls): allowed its part of the loop, refused the rest,
    and the broker's authorizer says so in its log."""
    assert stack.kafka.acls
    j, s, ps = stack.joiner, stack.serving, stack.paramserver
    _write(stack, "serving", s.features_topic)
    _read(stack, "trainer", j.examples_topic)
    _write(stack, "paramserver", ps.deltas_topic)
    _read(stack, "paramserver", ps.deltas_topic)
    # (on a topic a user has no grant on at all, the broker refuses the first step: DESCRIBE)
    refused = [("serving", "READ", s.features_topic, _read),  # the model server reads nothing
               ("trainer", "WRITE", j.examples_topic, _write),  # only the joiner writes examples
               ("monitor", "WRITE", j.examples_topic, _write),  # the monitor writes nothing
               ("serving", "DESCRIBE", ps.deltas_topic, _write),  # nobody else ships embeddings
               ("trainer", "DESCRIBE", ps.deltas_topic, _read)]
    for role, operation, topic, attempt in refused:
        with pytest.raises(TopicAuthorizationFailedError):
            attempt(stack, role, topic)
        assert wait_until(lambda: _denied(stack, role, operation, topic), 15, 0.2), (role, operation, topic)


def test_up_takes_back_grants_the_config_no_longer_names(stack):
    stale = kafka_acls.Grant("trainer", "TOPIC", stack.joiner.features_topic, "READ")
    assert kafka_acls.allow(stack, {stale}) == 1
    _read(stack, "trainer", stack.joiner.features_topic)  # the grant works
    assert kafka_acls.ensure(stack) == {"added": 0, "deleted": 0}  # without prune: kept
    assert kafka_acls.ensure(stack, prune=True)["deleted"] >= 1
    admin = KafkaAdminClient(**kafka_args(stack))
    try:
        held = kafka_acls.current(admin)
    finally:
        admin.close()
    assert stale not in held and kafka_acls.grants(stack) <= held
    with pytest.raises(TopicAuthorizationFailedError):
        _read(stack, "trainer", stack.joiner.features_topic)
