"""Kafka: one combined broker+controller node in KRaft mode, topics from the config."""

from __future__ import annotations

import base64
import uuid

from flywheel.config import FlywheelConfig
from flywheel.secrets import jaas_plain, kafka_args, kafka_password, kafka_users
from flywheel.stack import kafka_tls
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
    """The broker+controller's properties. With ``kafka.sasl`` both listeners take SASL/PLAIN
    logins only (kafka.user, which this node logs in as too, and with ``kafka.acls`` each
    component's own user, allowed only its grants); with
    ``kafka.tls`` they speak TLS (flywheel/stack/kafka_tls.py). The file holds the passwords: it
    is written mode 0600 in the state dir."""
    bind, host, k = cfg.stack.bind, cfg.stack.host_of("kafka"), cfg.kafka
    data = cfg.stack.root / "kafka" / "data"
    protocol = k.security_protocol
    login = kafka_tls.server_properties(cfg) if k.tls else ""
    if k.sasl:
        jaas = jaas_plain(k.user, kafka_password(cfg), accept=kafka_users(cfg))
        login += f"""\
sasl.enabled.mechanisms=PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.client.plain.sasl.jaas.config={jaas}
listener.name.controller.plain.sasl.jaas.config={jaas}
"""
    if k.acls:  # flywheel/stack/kafka_acls.py; the node itself logs in as the super user
        login += f"""\
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:{k.user}
allow.everyone.if.no.acl.found=false
"""
    return f"""\
# Rendered by flywheel.stack.kafka from config/flywheel.yaml; edits here are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{k.controller_port}
listeners=CLIENT://{bind}:{k.port},CONTROLLER://{bind}:{k.controller_port}
advertised.listeners=CLIENT://{host}:{k.port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=CLIENT
listener.security.protocol.map=CLIENT:{protocol},CONTROLLER:{protocol}
{login}log.dirs={data}
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
        if cfg.kafka.tls:
            kafka_tls.ensure(cfg)
        write(conf, server_properties(cfg), mode=0o600)
        write(log4j, LOG4J2)
        if not (home / "data" / "meta.properties").exists():
            run_once(jvm + ["kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(conf)],
                     "formatting Kafka storage")

    def post_start() -> None:
        from flywheel.stack import kafka_acls
        from flywheel.topics import ensure_topics

        ensure_topics(cfg)
        kafka_acls.ensure(cfg, prune=True)

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

    admin = KafkaAdminClient(**kafka_args(cfg), request_timeout_ms=3000)
    try:
        admin.list_topics()
        return True
    finally:
        admin.close()
