"""The joiner: a long-running PyFlink job that joins served ``features`` with user ``actions``
into training ``examples``, keyed by (request_id, item_id), in event time.

- Examples go out keyed by user (``key_of``), dead letters keyed by their source topic, both
  exactly-once by default (Kafka transactions committed at each checkpoint).
- Both topics are read as raw bytes (``ByteArraySchema``), so a rejected message reaches the
  dead-letter topic byte for byte, with the :class:`~streaming.schemas.SchemaError` reason.
- Event time is each record's ``event_time`` (ms), with bounded out-of-orderness watermarks
  and an idleness timeout (a partition without traffic does not hold the watermark back).
- Per key, features wait in ``ValueState`` and actions that came first in ``ListState``
  (RocksDB, the cluster's backend): an action that joins emits a positive at once (labels
  cumulative over the key's actions); at ``features.event_time + label_window`` a key with no
  positive becomes a negative, kept per task with that task's negative rate (a hash of the
  key decides, so a replay keeps the same ones: :mod:`streaming.sampling`) and carrying
  ``sample_rate`` (and ``sample_rates`` when the tasks' rates differ). A ``skip`` on a shown
  item that has no outcome yet is an explicit negative: emitted at once, kept for sure
  (``sample_rate`` 1), and no sampled negative follows it. An action after either negative
  (within retention) emits a corrected positive (``is_correction``); at
  ``max(event times) + retention`` the key's state is cleared.
- With ``--provisional-negatives`` (the online trainer's delayed feedback, ``online.delayed_feedback:
  fnw``; pipelines/online/delayed.py), each served item also goes out at once, when its
  features arrive, as a ``provisional`` negative: kept by the same hash and rates as the
  label-window negative, so an impression is visible to online training before its window
  closes. The examples above still follow; landing leaves provisional ones out of HDFS.
- Flink metrics (REST, per operator): ``flywheel.accepted`` and ``flywheel.dead_letters.<reason>``
  of the parsers; ``flywheel.join.positives``, ``.corrections``, ``.negatives_kept``,
  ``.negatives_dropped``, ``.negatives_explicit`` (skips), ``.provisional``, ``.latency_ms_sum`` and ``.latency_joins`` (wall-clock ms from a live
  action's event time to its join, summed, and the joins counted) of the join. Counters only:
  a gauge is a Python callback from Flink's metric threads, which crashed the TaskManager when
  the job was cancelled (thread mode).

Run (``flywheel.flinkjobs.submit`` does this with the stack's environment)::

    FLYWHEEL_KAFKA_PASSWORD=... flink run -py streaming/jobs/joiner.py \
        --bootstrap 127.0.0.1:9092 --kafka-user flywheel --kafka-ca .flywheel/kafka/tls/public/ca.pem \
        --features-topic features --actions-topic actions --examples-topic examples \
        --dead-letter-topic dead-letter
"""

from __future__ import annotations

import argparse
import time

from pyflink.common import Duration, Row, WatermarkStrategy
from pyflink.common.serialization import ByteArraySchema
from pyflink.common.typeinfo import Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import OutputTag, StreamExecutionEnvironment
from pyflink.datastream.connectors.kafka import KafkaOffsetResetStrategy, KafkaOffsetsInitializer, KafkaSource
from pyflink.datastream.functions import KeyedProcessFunction, ProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor
from pyflink.table import StreamTableEnvironment

from streaming.jobs import kafka_login
from streaming.jobs.landing import land_examples, sql_options
from streaming.sampling import example_rates, parse_rates, sample_negative
from streaming.schemas import (
    REJECT_REASONS,
    TASKS,
    Example,
    SchemaError,
    dead_letter,
    encode,
    key_of,
    labels_from_action,
    parse_action,
    parse_features,
)


def keyed_bytes() -> Types:
    """Type of what the sinks take: rows of (Kafka key, Kafka value), both bytes."""
    return Types.ROW_NAMED(["k", "v"], [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.PRIMITIVE_ARRAY(Types.BYTE())])


DEAD_LETTERS = "dead-letter"  # side output tag of Parse: rows keyed by source topic
FEATURES, ACTION = "f", "a"
NO_LABELS = {task: 0 for task in TASKS}
JOIN_COUNTERS = ("positives", "corrections", "negatives_kept", "negatives_dropped", "negatives_explicit", "provisional")
# join latency of live actions (wall clock at the join minus the action's event time): the sum
# (ms) and the count, so a reader takes the mean over any window
JOIN_LATENCY = ("latency_ms_sum", "latency_joins")


class Parse(ProcessFunction):
    """Raw Kafka value -> tagged record ``(kind, join key, event_time ms, payload)``; rejects
    go to the ``DEAD_LETTERS`` side output. The payload is the raw features bytes, or the action type.

    Metrics (Flink UI / REST, on the ``parse <topic>`` operator): ``flywheel.accepted`` and
    ``flywheel.dead_letters.<reason>`` for each :data:`~streaming.schemas.REJECT_REASONS`."""

    def __init__(self, topic: str, kind: str):
        self.topic, self.kind = topic, kind

    def open(self, runtime_context: RuntimeContext):
        # made here, not pickled: a used type info holds Java objects
        self.dead = OutputTag(DEAD_LETTERS, keyed_bytes())
        group = runtime_context.get_metrics_group().add_group("flywheel")
        self.accepted = group.counter("accepted")
        rejected = group.add_group("dead_letters")
        self.rejected = {reason: rejected.counter(reason) for reason in REJECT_REASONS}

    def process_element(self, raw, ctx):
        try:
            if self.kind == FEATURES:
                event = parse_features(raw)
                payload = bytes(raw)
            else:
                event = parse_action(raw)
                payload = event.action
        except SchemaError as err:
            self.rejected[err.reason].inc()
            yield self.dead, Row(self.topic.encode("utf-8"), dead_letter(raw, self.topic, err))
            return
        self.accepted.inc()
        yield self.kind, f"{event.request_id}|{event.item_id}", event.event_time, payload


class EventTime(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return value[2]


class Join(KeyedProcessFunction):
    """Joins one (request_id, item_id): see the module docstring for the rules.

    State, one pickled ``[features, labels, outcome, max_time]`` per key (one RocksDB read and
    at most one write per event): ``features`` (raw bytes, or None before they arrive),
    ``labels`` (cumulative labels emitted so far), ``outcome`` ("" until the label window
    closes or a positive goes out; then "positive", "negative" or "dropped"), ``max_time``
    (latest event time of the key, ms); plus ``pending``, the (event_time, action) pairs that
    came before the features.
    """

    def __init__(self, label_window_ms: int, retention_ms: int, negative_rates: dict[str, float],
                 provisional_negatives: bool = False):
        self.window, self.retention, self.rates = label_window_ms, retention_ms, negative_rates
        self.provisional = provisional_negatives

    def open(self, runtime_context: RuntimeContext):
        # Type infos are made here (module-level ones hold Java objects, which do not pickle).
        pickled = Types.PICKLED_BYTE_ARRAY()
        self.state = runtime_context.get_state(ValueStateDescriptor("join", pickled))
        self.pending = runtime_context.get_list_state(ListStateDescriptor("pending", pickled))
        # Flink metrics (REST: <operator>.flywheel.join.*), read by the demo page's joiner panel
        group = runtime_context.get_metrics_group().add_group("flywheel").add_group("join")
        # counters only: a gauge is a Python callback that Flink's metric threads call, and
        # calling into Python while the task is cancelled crashes the TaskManager (thread mode)
        self.counted = {name: group.counter(name) for name in JOIN_COUNTERS + JOIN_LATENCY}

    def process_element(self, value, ctx):
        kind, _key, event_time, payload = value
        state = self.state.value()
        if state is None or event_time > state[3]:
            state = state or [None, dict(NO_LABELS), "", event_time]
            state[3] = event_time
            ctx.timer_service().register_event_time_timer(event_time + self.retention)
        out = []
        if kind == FEATURES:
            if state[0] is None:  # a duplicate delivery of the same served item: the first counts
                state[0] = payload
                ctx.timer_service().register_event_time_timer(event_time + self.window)
                if self.provisional and (kept := sample_negative(ctx.get_current_key(), self.rates)):
                    out.append(self._provisional_negative(payload, kept))
                actions = list(self.pending.get() or [])
                if actions:
                    self.pending.clear()
                    out += [ex for t, a in sorted(actions) if (ex := self._join(state, t, a))]
        elif state[0] is None:
            self.pending.add((event_time, payload))
        elif ex := self._join(state, event_time, payload):
            out = [ex]
        self.state.update(state)
        yield from out

    def _join(self, state: list, action_time: int, action: str) -> Row | None:
        """Merge one action's labels into ``state``; the positive to emit when it adds a task."""
        before = state[1]
        merged = {t: max(before[t], v) for t, v in labels_from_action(action).items()}
        if merged == before:
            if action == "skip" and not state[2]:
                return self._explicit_negative(state, action_time)
            return None
        state[1] = merged
        features = parse_features(state[0])
        correction = state[2] == "negative"
        if not correction:
            state[2] = "positive"
        self.counted["corrections" if correction else "positives"].inc()
        lag = int(time.time() * 1000) - action_time
        if 0 <= lag <= self.window:  # a live action (late ones would measure their lateness)
            self.counted["latency_ms_sum"].inc(lag)
            self.counted["latency_joins"].inc()
        delay = max(0, action_time - features.event_time)
        example = Example.from_features(features, merged, 1.0, delay, is_correction=correction)
        return Row(key_of(example), encode(example))

    def _explicit_negative(self, state: list, action_time: int) -> Row:
        """A skip before any outcome: the negative at once, kept for sure (no sampled one later)."""
        features = parse_features(state[0])
        state[2] = "negative"
        self.counted["negatives_explicit"].inc()
        example = Example.from_features(features, dict(NO_LABELS), 1.0, max(0, action_time - features.event_time))
        return Row(key_of(example), encode(example))

    def _provisional_negative(self, raw: bytes, kept: dict[str, float]) -> Row:
        """The served item as a negative at once (before any action), kept as its label-window
        negative would be."""
        features = parse_features(raw)
        self.counted["provisional"].inc()
        rate, rates = example_rates(kept)
        example = Example.from_features(features, dict(NO_LABELS), rate, 0, sample_rates=rates, provisional=True)
        return Row(key_of(example), encode(example))

    def on_timer(self, timestamp: int, ctx):
        state = self.state.value()
        if state is None:
            return
        raw, _labels, outcome, latest = state
        if timestamp >= latest + self.retention:
            self.state.clear()
            self.pending.clear()
            return
        if raw is not None and not outcome:
            features = parse_features(raw)
            if timestamp >= features.event_time + self.window:
                if kept := sample_negative(ctx.get_current_key(), self.rates):
                    state[2] = "negative"
                    self.counted["negatives_kept"].inc()
                    rate, rates = example_rates(kept)
                    example = Example.from_features(features, dict(NO_LABELS), rate, self.window, sample_rates=rates)
                    yield Row(key_of(example), encode(example))
                else:
                    state[2] = "dropped"
                    self.counted["negatives_dropped"].inc()
                self.state.update(state)


def kafka_source(args, topic: str) -> KafkaSource:
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(args.bootstrap)
        .set_topics(topic)
        .set_group_id(args.group)
        .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST))
        .set_value_only_deserializer(ByteArraySchema())
    )
    for key, value in kafka_login.properties(args.kafka_user, args.kafka_ca).items():
        builder = builder.set_property(key, value)
    return builder.build()


def keyed_kafka_sink(t_env: StreamTableEnvironment, statements, records, name: str, topic: str, args) -> None:
    """Write ``records`` (``(key bytes, value bytes)`` rows) to ``topic`` with Kafka keys.

    Through the Table API's Kafka connector: the DataStream ``KafkaSink`` of PyFlink can only
    serialize a whole record as the key, never a field of it. Exactly-once = Kafka
    transactions committed on each checkpoint (readers use ``isolation.level=read_committed``).
    """
    t_env.create_temporary_view(f"{name}_rows", t_env.from_data_stream(records))
    exactly_once = args.delivery == "exactly-once"
    options = {
        "connector": "kafka", "topic": topic, "properties.bootstrap.servers": args.bootstrap,
        "key.format": "raw", "key.fields": "k", "value.format": "raw", "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": args.delivery, **kafka_login.table_options(args.kafka_user, args.kafka_ca),
        **({"sink.transactional-id-prefix": f"{args.group}-{name}",
            # the broker refuses transactions longer than its transaction.max.timeout.ms (15 min)
            "properties.transaction.timeout.ms": "900000"} if exactly_once else {}),
    }
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {name}_sink (k BYTES, v BYTES) WITH ({sql_options(options)})")
    statements.add_insert_sql(f"INSERT INTO {name}_sink SELECT k, v FROM {name}_rows")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kafka_login.add_arguments(parser)
    parser.add_argument("--features-topic", default="features")
    parser.add_argument("--actions-topic", default="actions")
    parser.add_argument("--examples-topic", default="examples")
    parser.add_argument("--dead-letter-topic", default="dead-letter")
    parser.add_argument("--label-window-s", type=float, default=1800, help="action window after serving, s")
    parser.add_argument("--retention-s", type=float, default=7 * 86400, help="state kept after the last event, s")
    parser.add_argument("--negative-rate", type=float, default=0.1, help="share of negatives kept, 0 < r <= 1")
    parser.add_argument("--negative-rates", default="", help="per-task overrides of --negative-rate, "
                        f"e.g. like=0.3,share=1 (tasks: {', '.join(TASKS)})")
    parser.add_argument("--provisional-negatives", action="store_true",
                        help="also emit each kept served item at once as a provisional negative (delayed feedback)")
    parser.add_argument("--out-of-orderness-s", type=float, default=5, help="watermark lag behind event time, s")
    parser.add_argument("--idle-timeout-s", type=float, default=30, help="a silent partition stops holding the watermark, s")
    parser.add_argument("--parallelism", type=int, default=0, help="0 = the cluster default")
    parser.add_argument("--group", default="flywheel-joiner", help="consumer group; prefix of transactional ids")
    parser.add_argument("--delivery", choices=["exactly-once", "at-least-once"], default="exactly-once")
    parser.add_argument("--land-path", default="", help="land committed examples here as hourly Parquet "
                        "(e.g. hdfs://127.0.0.1:8020/flywheel/examples); empty: do not land")
    parser.add_argument("--land-lateness-s", type=int, default=60,
                        help="an hour is complete this long (in example time) after it ends, s; >= the out-of-orderness")
    args = parser.parse_args(argv)
    try:
        rates = parse_rates(args.negative_rates, TASKS, args.negative_rate)
    except ValueError as err:
        parser.error(f"--negative-rate/--negative-rates: {err}")

    env = StreamExecutionEnvironment.get_execution_environment()
    if args.parallelism:
        env.set_parallelism(args.parallelism)
    watermarks = (
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(int(args.out_of_orderness_s * 1000)))
        .with_idleness(Duration.of_millis(int(args.idle_timeout_s * 1000)))
        .with_timestamp_assigner(EventTime())
    )
    tagged, dead = [], []
    for topic, kind in ((args.features_topic, FEATURES), (args.actions_topic, ACTION)):
        # uids are the operators' identities in savepoints: a job changed elsewhere (landing on
        # or off, new operators) still restores their state. Keep them stable.
        parsed = (
            env.from_source(kafka_source(args, topic), WatermarkStrategy.no_watermarks(), f"kafka:{topic}")
            .uid(f"source-{kind}")
            .process(Parse(topic, kind), output_type=Types.PICKLED_BYTE_ARRAY())
            .name(f"parse {topic}").uid(f"parse-{kind}")
        )
        dead.append(parsed.get_side_output(OutputTag(DEAD_LETTERS, keyed_bytes())))
        tagged.append(parsed.assign_timestamps_and_watermarks(watermarks).uid(f"watermarks-{kind}"))
    join = Join(int(args.label_window_s * 1000), int(args.retention_s * 1000), rates, args.provisional_negatives)
    examples = (
        tagged[0].union(tagged[1])
        .key_by(lambda record: record[1], key_type=Types.STRING())
        .process(join, output_type=keyed_bytes())
        .name("join").uid("join")
    )
    t_env = StreamTableEnvironment.create(env)
    statements = t_env.create_statement_set()
    keyed_kafka_sink(t_env, statements, examples, "examples", args.examples_topic, args)
    keyed_kafka_sink(t_env, statements, dead[0].union(dead[1]), "dead_letters", args.dead_letter_topic, args)
    if args.land_path:
        land_examples(t_env, statements, bootstrap=args.bootstrap, login=kafka_login.table_options(args.kafka_user, args.kafka_ca), topic=args.examples_topic,
                      group=f"{args.group}-landing", path=args.land_path, lateness_s=args.land_lateness_s,
                      idle_timeout_s=args.idle_timeout_s)
    statements.attach_as_datastream()
    env.execute(f"joiner {args.features_topic} + {args.actions_topic} -> {args.examples_topic}")


if __name__ == "__main__":
    main()
