"""Stop the joiner with a savepoint and resume it (``flywheel joiner stop/resume``, as
``make joiner-stop/joiner-resume`` run them): nothing lost, nothing duplicated, on Kafka and
in the Parquet landed on HDFS."""

import json
import os
import time
import uuid
from collections import Counter

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from flywheel import flinkjobs, joiner_job
from flywheel.config import load_config
from flywheel.hdfs import webhdfs
from flywheel.secrets import kafka_args
from flywheel.spark import spark_session
from flywheel.stack import kafka_acls
from streaming.schemas import Action, Features, encode, key_of

pytestmark = pytest.mark.integration
T0 = 1_750_000_000_000  # 2025-06-15 15:06:40 UTC
WINDOW_S = 60
USERS = range(1, 9)  # over both partitions of the stack's topics


@pytest.fixture
def cfg(stack):
    tag = uuid.uuid4().hex[:6]
    topics = {name: f"it-sp-{name}-{tag}" for name in ("features", "actions", "examples", "dead")}
    admin = KafkaAdminClient(**kafka_args(stack))
    admin.create_topics([NewTopic(t, 2, 1) for t in topics.values()])  # two partitions, as the stack's
    admin.close()
    env = {**os.environ, "FLYWHEEL__JOINER__FEATURES_TOPIC": topics["features"],
           "FLYWHEEL__JOINER__ACTIONS_TOPIC": topics["actions"], "FLYWHEEL__JOINER__EXAMPLES_TOPIC": topics["examples"],
           "FLYWHEEL__JOINER__DEAD_LETTER_TOPIC": topics["dead"], "FLYWHEEL__JOINER__LABEL_WINDOW_S": str(WINDOW_S), "FLYWHEEL__JOINER__NEGATIVE_RATE": "1.0",
           "FLYWHEEL__JOINER__OUT_OF_ORDERNESS_S": "1", "FLYWHEEL__JOINER__PARALLELISM": "1",
           "FLYWHEEL__JOINER__GROUP": f"it-sp-{tag}", "FLYWHEEL__JOINER__LAND_LATENESS_S": "10",
           "FLYWHEEL__JOINER__EXAMPLES_DIR": f"{stack.hdfs.root}/it/sp-examples-{tag}"}
    cfg = load_config(environ=env)
    kafka_acls.ensure(cfg)  # the joiner's grants on these topics
    yield cfg
    for job in flinkjobs.running(cfg, joiner_job.job_name(cfg)):
        flinkjobs.cancel(cfg, job)


def test_stop_with_savepoint_and_resume_loses_and_duplicates_nothing(cfg):
    run = uuid.uuid4().hex[:6]
    producer = KafkaProducer(**kafka_args(cfg))

    def send(event):
        topic = cfg.joiner.features_topic if isinstance(event, Features) else cfg.joiner.actions_topic
        producer.send(topic, key=key_of(event), value=encode(event))

    def served(name: str, user: int, at: int = T0) -> Features:
        return Features(request_id=f"{run}-{name}", user_id=user, item_id=user * 10, event_time=at, position=0,
                        model_version="m1", sparse={"item": [user * 10]})

    def click(name: str, user: int, at: int) -> Action:
        return Action(request_id=f"{run}-{name}", user_id=user, item_id=user * 10, event_time=at, action="click")

    joiner_job.start(cfg)
    for u in USERS:  # before the stop: "a" joins at once; "b" waits for its click; "c" will be a negative
        send(served("a", u)), send(click("a", u, T0 + 1_000))
        send(served("b", u)), send(served("c", u))
    producer.flush()
    got = read_examples(cfg, run, want=len(USERS))
    assert Counter(e["request_id"] for e in got if not e.get("provisional")) == {f"{run}-a": len(USERS)}

    savepoint = joiner_job.stop(cfg)
    assert savepoint.startswith("hdfs://") and joiner_job.record(cfg)["savepoint"] == savepoint
    assert not flinkjobs.running(cfg, joiner_job.job_name(cfg))
    for u in USERS:  # while stopped: the clicks for "b" (whose features are in the savepoint), and "d"
        send(click("b", u, T0 + 5_000))
        send(served("d", u, T0 + 6_000)), send(click("d", u, T0 + 7_000))
    producer.flush()
    joiner_job.resume(cfg)
    assert joiner_job.record(cfg)["savepoint"] is None  # used up: a later resume needs a new stop
    for u in USERS:  # event time moves on: "c" becomes a negative
        send(served("late", u, T0 + (WINDOW_S + 10) * 1000))
    producer.flush()
    read_examples(cfg, run, want=4 * len(USERS))
    for u in USERS:  # then "late" becomes a negative, and examples two hours on complete hour 15
        send(served("later", u, T0 + 2 * 3_600_000)), send(click("later", u, T0 + 2 * 3_600_000 + 1))
    producer.flush()
    everything = read_examples(cfg, run, want=6 * len(USERS))
    got = [e for e in everything if not e.get("provisional")]
    # the test config trains online with fake negative weighting: each served item also went out
    # at once as a provisional negative (negative rate 1: all kept), once, across the savepoint too
    provisional = Counter((e["request_id"].split("-")[1], e["user_id"]) for e in everything if e.get("provisional"))
    assert set(provisional.values()) == {1} and len(provisional) == 6 * len(USERS), provisional

    counts = Counter((e["request_id"].split("-")[1], e["user_id"], e["labels"]["click"]) for e in got)
    assert set(counts.values()) == {1}, f"duplicates: {[k for k, n in counts.items() if n > 1]}"
    assert Counter(k[0] for k in counts) == {n: len(USERS) for n in ("a", "b", "c", "d", "late", "later")}
    assert all(click == (name in ("a", "b", "d", "later")) for name, _, click in counts)

    fs = webhdfs(cfg)
    hour = f"{cfg.joiner.examples_dir}/dt=2025-06-15/hour=15"
    deadline = time.monotonic() + 120
    while not fs.exists(f"{hour}/_SUCCESS"):
        assert time.monotonic() < deadline, f"{hour}/_SUCCESS did not appear"
        time.sleep(1)
    spark = spark_session(cfg, "it-savepoint")
    try:  # every final example once on HDFS too, no provisional one (later hours' files show up at the next checkpoints)
        for _ in range(6):
            landed = spark.read.parquet(f"{cfg.hdfs_uri}{cfg.joiner.examples_dir}").where(f"request_id LIKE '{run}-%'")
            landed = Counter((r["request_id"].split("-")[1], r["user_id"], r["labels"]["click"]) for r in landed.collect())
            if landed == counts:
                break
            time.sleep(5)
    finally:
        spark.stop()
    assert landed == counts, f"HDFS differs from Kafka: {landed - counts} extra, {counts - landed} missing"


def read_examples(cfg, run: str, want: int, timeout_s: float = 120) -> list[dict]:
    """Every committed example of this run on the examples topic (from the start), once ``want``
    final ones (not provisional) are there (plus 3 s for any extra)."""
    consumer = KafkaConsumer(cfg.joiner.examples_topic, **kafka_args(cfg), auto_offset_reset="earliest",
                             isolation_level="read_committed", consumer_timeout_ms=1000)
    found, deadline, settle = [], time.monotonic() + timeout_s, None
    try:
        while time.monotonic() < deadline and (settle is None or time.monotonic() < settle):
            for batch in consumer.poll(timeout_ms=1000).values():
                found += [e for m in batch if (e := json.loads(m.value))["request_id"].startswith(f"{run}-")]
            if settle is None and sum(not e.get("provisional") for e in found) >= want:
                settle = time.monotonic() + 3
    finally:
        consumer.close()
    seen = Counter(e["request_id"] for e in found if not e.get("provisional"))
    assert sum(seen.values()) >= want, f"{len(found)}/{want} examples after {timeout_s:.0f}s: {dict(seen)}"
    return found
