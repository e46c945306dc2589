"""The joiner job on the real broker and Flink cluster: joins in and out of order, negatives
at window end, a corrected positive days later in event time, dead letters.

Each test creates its own single-partition topics (an empty partition would hold the
watermark back until the idleness timeout) and submits and cancels its own job. Event time is
driven by producing later events of other keys, never by sleeping.
"""

import json
import time
import uuid

import pytest
import requests
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from flywheel import flinkjobs
from flywheel.config import REPO_ROOT
from flywheel.hdfs import webhdfs
from flywheel.secrets import flink_auth, kafka_args
from flywheel.spark import spark_session
from serving.panels import flink_join
from streaming.sampling import sample_negative
from streaming.schemas import Action, Features, encode, key_of

pytestmark = pytest.mark.integration

T0 = 1_750_000_000_000  # event time of the served features, ms
WINDOW_S = 60


class Joiner:
    """One joiner job on fresh topics, with a producer and a reader of its outputs."""

    def __init__(self, stack, **options):
        tag = uuid.uuid4().hex[:6]
        self.stack = stack
        self.topics = {name: f"it-join-{name}-{tag}" for name in ("features", "actions", "examples", "dead")}
        admin = KafkaAdminClient(**kafka_args(stack))
        admin.create_topics([NewTopic(t, 1, 1) for t in self.topics.values()])
        admin.close()
        self.producer = KafkaProducer(**kafka_args(stack))
        args = {"label-window-s": WINDOW_S, "negative-rate": 1.0, "out-of-orderness-s": 1,
                "parallelism": 1, "group": f"it-join-{tag}", **options}
        argv = [*flinkjobs.kafka_argv(stack),
                "--features-topic", self.topics["features"], "--actions-topic", self.topics["actions"],
                "--examples-topic", self.topics["examples"], "--dead-letter-topic", self.topics["dead"]]
        for name, value in args.items():
            argv += [f"--{name}"] if value is True else [f"--{name}", str(value)]
        self.job = flinkjobs.submit(stack, REPO_ROOT / "streaming/jobs/joiner.py", argv)
        flinkjobs.wait(stack, self.job, until={"RUNNING"}, timeout_s=120)
        self.readers = {}

    def send(self, event, raw: bytes | None = None, topic: str | None = None):
        topic = topic or self.topics["features" if isinstance(event, Features) else "actions"]
        self.producer.send(topic, key=key_of(event) if event else b"x", value=raw or encode(event))
        self.producer.flush()

    def read(self, name: str, count: int, where=lambda r: True, timeout_s: float = 90,
             settle_s: float = 0) -> list[dict]:
        """Wait for ``count`` new records matching ``where`` on an output topic (then ``settle_s``
        more for any further ones); return them."""
        if name not in self.readers:
            self.readers[name] = KafkaConsumer(self.topics[name], **kafka_args(self.stack),
                                               auto_offset_reset="earliest", consumer_timeout_ms=1000,
                                               isolation_level="read_committed")
        found, deadline = [], time.monotonic() + timeout_s
        settled = None
        while time.monotonic() < deadline and (settled is None or time.monotonic() < settled):
            if settled is None and len(found) >= count:
                settled = time.monotonic() + settle_s
            if flinkjobs.state(self.stack, self.job) != "RUNNING":
                raise AssertionError(flinkjobs.exceptions(self.stack, self.job))
            for msg in self.readers[name].poll(timeout_ms=1000).values():
                for m in msg:
                    record = json.loads(m.value)
                    if where(record):
                        found.append({**record, "_key": m.key})
        assert len(found) >= count, f"{len(found)}/{count} records on {name} after {timeout_s}s: {found}"
        return found

    def close(self):
        flinkjobs.cancel(self.stack, self.job)
        for reader in self.readers.values():
            reader.close()
        self.producer.close()


@pytest.fixture
def joiner(stack):
    jobs = []

    def start(**options) -> Joiner:
        jobs.append(Joiner(stack, **options))
        return jobs[-1]

    yield start
    for job in jobs:
        job.close()


def features(request_id: str, item_id: int = 7, event_time: int = T0, user_id: int = 42) -> Features:
    return Features(request_id=request_id, user_id=user_id, item_id=item_id, event_time=event_time,
                    position=3, model_version="m1", sparse={"item": [item_id]}, dense={"age": 0.5})


def action(request_id: str, kind: str, event_time: int, item_id: int = 7, user_id: int = 42) -> Action:
    return Action(request_id=request_id, user_id=user_id, item_id=item_id, event_time=event_time, action=kind)


def of(request_id: str):
    return lambda r: r["request_id"] == request_id


def test_in_order_action_joins_into_a_positive(joiner):
    j = joiner()
    j.send(features("r1"))
    j.send(action("r1", "click", T0 + 4_000))
    [ex] = j.read("examples", 1, of("r1"))
    assert ex["labels"] == {"click": 1, "like": 0, "finish": 0, "share": 0}
    assert ex["join_delay_ms"] == 4_000 and ex["sample_rate"] == 1.0 and not ex.get("is_correction")
    assert ex["sparse"] == {"item": [7]} and ex["user_id"] == 42 and ex["position"] == 3
    assert ex["_key"] == b"42"  # keyed by user, co-partitioned with the user's events
    j.send(action("r1", "like", T0 + 9_000))  # a second task: labels are cumulative
    [ex2] = j.read("examples", 1, of("r1"))
    assert ex2["labels"] == {"click": 1, "like": 1, "finish": 0, "share": 0}
    assert ex2["join_delay_ms"] == 9_000


def test_provisional_negatives_go_out_at_once_and_the_final_examples_still_follow(joiner):
    j = joiner(**{"provisional-negatives": True})
    j.send(features("p1"))
    j.send(features("p2", item_id=8))
    first = j.read("examples", 2, lambda r: r["request_id"] in ("p1", "p2"))  # before any action or window
    assert all(e["provisional"] and e["labels"] == dict.fromkeys(e["labels"], 0) for e in first)
    assert {e["request_id"] for e in first} == {"p1", "p2"} and all(e["join_delay_ms"] == 0 for e in first)
    j.send(action("p1", "click", T0 + 3_000))
    [clicked] = j.read("examples", 1, of("p1"))
    assert clicked["labels"]["click"] == 1 and "provisional" not in clicked
    j.send(features("tick", item_id=9, event_time=T0 + (WINDOW_S + 10) * 1000))  # p2's window closes
    [negative] = j.read("examples", 1, of("p2"), settle_s=3)
    assert "provisional" not in negative and negative["join_delay_ms"] == WINDOW_S * 1000
    counted, deadline = {}, time.monotonic() + 60  # the join counter of what went out provisionally
    while time.monotonic() < deadline and counted.get("provisional", 0) < 3:
        counted = {k.rsplit(".", 1)[-1]: v for k, v in flinkjobs.metrics(j.stack, j.job, ".flywheel.join.").items()}
        time.sleep(2)
    assert counted["provisional"] == 3  # p1, p2, tick


def test_action_before_its_features_waits_and_joins(joiner):
    j = joiner()
    j.send(action("r2", "share", T0 + 2_000))
    j.send(action("r2", "impression", T0 + 1_000))
    time.sleep(2)  # let the actions reach state first; event time is not involved
    j.send(features("r2"))
    [ex] = j.read("examples", 1, of("r2"))
    assert ex["labels"] == {"click": 0, "like": 0, "finish": 0, "share": 1}
    assert ex["join_delay_ms"] == 2_000 and ex["sample_rate"] == 1.0


def test_negative_at_window_end_then_a_corrected_positive_three_days_late(joiner):
    j = joiner()
    j.send(features("r3"))
    # Later events of other keys move the watermark (on both inputs) past r3's window end.
    later = T0 + (WINDOW_S + 10) * 1000
    j.send(features("filler", item_id=1, event_time=later))
    j.send(action("filler", "impression", later, item_id=1))
    [neg] = j.read("examples", 1, of("r3"))
    assert neg["labels"] == {"click": 0, "like": 0, "finish": 0, "share": 0}
    assert neg["sample_rate"] == 1.0 and neg["join_delay_ms"] == WINDOW_S * 1000
    three_days = 3 * 86_400_000
    j.send(action("r3", "finish", T0 + three_days))
    [fix] = j.read("examples", 1, of("r3"))
    assert fix["is_correction"] is True and fix["labels"]["finish"] == 1
    assert fix["join_delay_ms"] == three_days


def test_a_skip_is_an_explicit_negative_at_once_and_a_later_click_corrects_it(joiner):
    j = joiner(**{"negative-rate": 0.01})  # sampled negatives would almost all be dropped: this one is kept
    j.send(features("r5"))
    j.send(action("r5", "impression", T0 + 500))  # no outcome: nothing
    j.send(action("r5", "skip", T0 + 1_000))
    [neg] = j.read("examples", 1, of("r5"))
    assert neg["labels"] == {"click": 0, "like": 0, "finish": 0, "share": 0}
    assert neg["sample_rate"] == 1.0 and neg["join_delay_ms"] == 1_000 and not neg.get("is_correction")
    j.send(action("r5", "skip", T0 + 2_000))  # a second skip adds nothing
    j.send(action("r5", "click", T0 + 3_000))
    [fix] = j.read("examples", 1, of("r5"))
    assert fix["is_correction"] is True and fix["labels"]["click"] == 1
    j.send(features("r6"))
    j.send(action("r6", "click", T0 + 1_000))
    j.send(action("r6", "skip", T0 + 2_000))  # after a positive a skip is no negative
    assert len(j.read("examples", 1, of("r6"), settle_s=10)) == 1


def test_negatives_are_sampled_per_task_with_their_rates_written(joiner):
    rates = {"click": 0.25, "like": 0.5, "finish": 0.5, "share": 0.5}
    j = joiner(**{"negative-rate": 0.5, "negative-rates": "click=0.25"})
    for i in range(60):
        j.send(features(f"n{i}", event_time=T0 + i))
    later = T0 + (WINDOW_S + 10) * 1000
    j.send(features("filler", item_id=1, event_time=later))
    j.send(action("filler", "impression", later, item_id=1))
    negs = j.read("examples", 10, lambda r: r["request_id"].startswith("n"), settle_s=5)
    # the same decisions as streaming.sampling makes offline for these keys
    want = {f"n{i}": kept for i in range(60) if (kept := sample_negative(f"n{i}|7", rates))}
    assert {n["request_id"] for n in negs} == set(want)
    for n in negs:
        assert not any(n["labels"].values()) and n["sample_rate"] == 0.5
        assert n["sample_rates"] == want[n["request_id"]]  # click: 0.25 or 0 (not kept for click)
    assert any(n["sample_rates"]["click"] == 0 for n in negs) and any(n["sample_rates"]["click"] for n in negs)


def test_malformed_message_goes_to_dead_letters_and_joining_continues(joiner):
    j = joiner()
    j.send(None, raw=b'{"not": "json', topic=j.topics["features"])
    j.send(None, raw=json.dumps({"schema_version": 1, "request_id": "r4"}).encode(), topic=j.topics["actions"])
    dead = j.read("dead", 2)
    by_topic = {d["source_topic"]: d for d in dead}
    assert by_topic[j.topics["features"]]["reason"] == "bad_json"
    assert by_topic[j.topics["actions"]]["reason"] == "missing_field"
    assert by_topic[j.topics["features"]]["preview"] == '{"not": "json'
    assert by_topic[j.topics["features"]]["_key"] == j.topics["features"].encode()
    counted, deadline = {}, time.monotonic() + 60  # the REST metric fetcher refreshes every ~10 s
    while time.monotonic() < deadline:
        counted = {k.rsplit(".", 1)[-1]: v for k, v in flinkjobs.metrics(j.stack, j.job, ".flywheel.dead_letters.").items() if v}
        if len(counted) == 2:
            break
        time.sleep(2)
    assert counted == {"bad_json": 1, "missing_field": 1}
    j.send(features("r4"))
    j.send(action("r4", "click", T0 + 1_000))
    [ex] = j.read("examples", 1, of("r4"))
    assert ex["labels"]["click"] == 1
    joined, deadline = {}, time.monotonic() + 60  # the join counters (the demo page's joiner panel)
    while time.monotonic() < deadline and not joined.get("positives"):
        joined = {k.rsplit(".", 1)[-1]: v for k, v in flinkjobs.metrics(j.stack, j.job, ".flywheel.join.").items()}
        time.sleep(2)
    assert joined["positives"] >= 1 and "negatives_kept" in joined and joined["latency_joins"] >= 0
    name = requests.get(f"{j.stack.flink_url}/jobs/{j.job}", auth=flink_auth(j.stack), timeout=10).json()["name"]
    panel = flink_join(j.stack, name, timeout_s=10)  # what the demo page's joiner panel reads
    assert panel["state"] == "RUNNING" and panel["positives"] >= 1 and panel["checkpoint_at"] > 0


def wait_for_file(fs, path: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not fs.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout_s:.0f}s"
        time.sleep(1)


def test_examples_land_on_hdfs_in_hourly_parquet_partitions(joiner, stack):
    folder = f"{stack.hdfs.root}/it/landing-{uuid.uuid4().hex[:8]}"
    # every negative kept (rate 1), but for share (almost) never: per-task rates land too
    j = joiner(**{"land-path": f"{stack.hdfs_uri}{folder}", "land-lateness-s": 10, "negative-rates": "share=1e-9"})
    # T0 is 2025-06-15 15:06:40 UTC: a positive and a negative in hour 15
    j.send(features("p1", user_id=5, item_id=11))
    j.send(action("p1", "click", T0 + 1_000, user_id=5, item_id=11))
    j.send(features("p2", user_id=6, item_id=12))
    first_filler = T0 + (WINDOW_S + 10) * 1000
    j.send(features("filler", item_id=1, event_time=first_filler))
    j.send(action("filler", "impression", first_filler, item_id=1))
    j.read("examples", 2, lambda r: r["request_id"] in ("p1", "p2"))
    two_hours_on = T0 + 2 * 3_600_000  # completes hour 15 (and 16)
    j.send(features("filler2", item_id=2, event_time=two_hours_on))
    j.send(action("filler2", "click", two_hours_on, item_id=2))

    fs = webhdfs(stack)
    hour = f"{folder}/dt=2025-06-15/hour=15"
    wait_for_file(fs, f"{hour}/_SUCCESS")
    assert any(p.endswith(".parquet") or "part-" in p for p in fs.ls(hour, detail=False))
    time.sleep(12)  # two more checkpoints: files of later hours become visible too
    spark = spark_session(stack, "it-landing")
    try:
        df = spark.read.parquet(f"{stack.hdfs_uri}{folder}")
        rows = {r["request_id"]: r for r in df.collect()}
    finally:
        spark.stop()
    assert set(rows) == {"p1", "p2", "filler", "filler2"}, sorted(rows)  # each once
    assert (str(rows["p1"]["dt"]), rows["p1"]["hour"], rows["p2"]["hour"]) == ("2025-06-15", 15, 15)
    # filler's negative (15:08:50) comes out after filler2's click (17:06:40): late, so it lands
    # in the watermark's hour, never in hour 15 after that hour was marked complete
    assert rows["filler"]["hour"] in (15, 16, 17) and rows["filler2"]["hour"] == 17
    p1, p2 = rows["p1"], rows["p2"]
    assert p1["labels"]["click"] == 1 and p1["user_id"] == 5 and p1["sparse"] == {"item": [11]}
    assert p1["join_delay_ms"] == 1_000 and p1["sample_rate"] == 1.0 and p1["dense"] == {"age": 0.5}
    assert not any(p2["labels"].asDict().values()) and p2["join_delay_ms"] == WINDOW_S * 1000
    assert p1["sample_rates"] is None and p2["sample_rates"].asDict() == {"click": 1, "like": 1, "finish": 1, "share": 0}
