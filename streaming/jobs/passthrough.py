"""Smoke job: read a Kafka topic, tag each JSON record in Python, write another topic.

Proves the cluster, the Maven-fetched Kafka connector and the Python (thread-mode) worker
work together. Bounded by default: it reads from the given start offsets up to the end
offsets seen at start-up, then finishes; ``--unbounded`` keeps it running (and
checkpointing) until cancelled.

Run (the `flywheel.flinkjobs.submit` helper does this with the stack's environment)::

    FLYWHEEL_KAFKA_PASSWORD=... flink run -py streaming/jobs/passthrough.py \
        --bootstrap 127.0.0.1:9092 --kafka-user flywheel --kafka-ca .flywheel/kafka/tls/public/ca.pem --source smoke-in --sink smoke-out --start-offsets '{"0": 0, "1": 0}'
"""

from __future__ import annotations

import argparse
import json

from pyflink.common import WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.common.typeinfo import Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
    KafkaTopicPartition,
)

from streaming.jobs import kafka_login


def tag(value: str) -> str:
    """Mark a record as having crossed Flink; malformed records are wrapped, not dropped."""
    try:
        record = json.loads(value)
    except ValueError:
        record = {"malformed": value}
    if not isinstance(record, dict):
        record = {"value": record}
    record["via"] = "flink"
    return json.dumps(record)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kafka_login.add_arguments(parser)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--start-offsets", required=True, help='JSON {"<partition>": <offset>}')
    parser.add_argument("--group", default="flywheel-passthrough")
    parser.add_argument("--unbounded", action="store_true", help="keep reading until cancelled")
    args = parser.parse_args(argv)

    starts = {
        KafkaTopicPartition(args.source, int(p)): int(o)
        for p, o in json.loads(args.start_offsets).items()
    }
    env = StreamExecutionEnvironment.get_execution_environment()
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(args.bootstrap)
        .set_topics(args.source)
        .set_group_id(args.group)
        .set_starting_offsets(KafkaOffsetsInitializer.offsets(starts))
        .set_value_only_deserializer(SimpleStringSchema())
    )
    if not args.unbounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(args.bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(args.sink)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    )
    for key, value in kafka_login.properties(args.kafka_user, args.kafka_ca).items():
        builder, sink = builder.set_property(key, value), sink.set_property(key, value)
    source, sink = builder.build(), sink.build()
    (
        env.from_source(source, WatermarkStrategy.no_watermarks(), f"kafka:{args.source}")
        .map(tag, output_type=Types.STRING())
        .sink_to(sink)
    )
    env.execute(f"passthrough {args.source} -> {args.sink}")


if __name__ == "__main__":
    main()
