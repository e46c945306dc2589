"""Kafka: one combined broker+controller node in KRaft mode, topics from the config."""

from __future__ import annotations

import base64
import uuid

from flywheel.config import FlywheelConfig
from flywheel.stack.base import Program, Service, jars, java, port_open, run_once, write

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.controller.name = kafka.controller
logger.controller.level = WARN
logger.coordinator.name = org.apache.kafka.coordinator
logger.coordinator.level = WARN
"""


def server_properties(cfg: FlywheelConfig) -> str:
    bind, host, k = cfg.stack.bind, cfg.stack.host_of("kafka"), cfg.kafka
    data = cfg.stack.root / "kafka" / "data"
    return f"""\
# Rendered by flywheel.stack.kafka from config/flywheel.yaml; edits here are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{k.controller_port}
listeners=PLAINTEXT://{bind}:{k.port},CONTROLLER://{bind}:{k.controller_port}
advertised.listeners=PLAINTEXT://{host}:{k.port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
num.partitions={k.num_partitions}
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
"""


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def service(cfg: FlywheelConfig) -> Service:
    home = cfg.stack.root / "kafka"
    conf = home / "server.properties"
    log4j = home / "log4j2.properties"
    classpath = jars("kafka")
    jvm = [java(), "-Xms256m", f"-Xmx{cfg.kafka.heap}", "-XX:+UseG1GC",
           f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={cfg.stack.logs}", "-cp", classpath]

    def prepare() -> None:
        write(conf, server_properties(cfg))
        write(log4j, LOG4J2)
        if not (home / "data" / "meta.properties").exists():
            run_once(jvm + ["kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(conf)],
                     "formatting Kafka storage")

    def post_start() -> None:
        from flywheel.topics import ensure_topics

        ensure_topics(cfg)

    return Service(
        name="kafka",
        url=cfg.kafka_bootstrap,
        programs=[Program("kafka", jvm + ["kafka.Kafka", str(conf)])],
        prepare=prepare,
        healthy=lambda: port_open(cfg.stack.host_of("kafka"), cfg.kafka.port) and _broker_ready(cfg),
        post_start=post_start,
        ports=[cfg.kafka.port, cfg.kafka.controller_port],
    )


def _broker_ready(cfg: FlywheelConfig) -> bool:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka_bootstrap, request_timeout_ms=3000)
    try:
        admin.list_topics()
        return True
    finally:
        admin.close()
