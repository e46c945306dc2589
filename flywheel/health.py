"""Stream health: is the joiner running, keeping up with its input, and writing fresh examples?

Each check returns a small dict of figures and raises :class:`HealthError` saying what is
wrong, where, and what to do; the ``stream_health`` DAG runs them every few minutes, and
``python -m flywheel.health`` runs them once. Thresholds: the ``health`` config section.

- :func:`joiner_running`: the Flink job named :func:`flywheel.joiner_job.job_name` is RUNNING.
- :func:`consumer_lag`: records between the committed offsets and the end of the topics, for
  the joiner's group (``joiner.group``) on its input topics and the landing's
  (``<group>-landing``) on the examples topic. The Flink Kafka source commits offsets to its
  group only when a checkpoint completes, so a healthy joiner lags by up to input rate x
  ``flink.checkpoint_interval_s``; ``health.max_lag_records`` must stay above that.
- :func:`freshness`: the newest committed record on the examples topic (read_committed, Kafka
  record timestamp) is at most ``health.max_example_age_s`` old.

The decisions (``judge_*``, :func:`partition_lag`) are separate from the requests, to test them alone.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone

import requests
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from flywheel import flinkjobs, joiner_job
from flywheel.config import FlywheelConfig, load_config
from flywheel.secrets import kafka_args

TAIL_RECORDS = 16  # freshness reads a partition's last records, widening x4 past aborted ones


class HealthError(RuntimeError):
    """A stream-health check failed; the message says what is wrong, where and what to do."""


# -- decisions --------------------------------------------------------------------------------
def judge_joiner(name: str, states: dict[str, str], last: dict, url: str) -> dict:
    """Decide on the joiner job from Flink's view of it.

    Args:
      name: the joiner's Flink job name.
      states: ``{job id: state}`` of the jobs named ``name`` that have not ended.
      last: what ``flywheel joiner`` remembered: ``job_id``, ``savepoint`` (either None), and
        ``state``/``cause`` of that job when Flink still knows it.
      url: the Flink REST/UI address, for messages.
    """
    if len(states) > 1:
        raise HealthError(f"{len(states)} joiner jobs named '{name}' run on Flink at {url} ({', '.join(states)}): "
                          "they share a consumer group and transactional ids; cancel all but one in the Flink UI")
    if states:
        job_id, state = next(iter(states.items()))
        if state == "RUNNING":
            return {"job_id": job_id, "state": state, "ui": f"{url}/#/job/running/{job_id}/overview"}
        cause = f"; last failure: {last['cause']}" if last.get("cause") else ""
        raise HealthError(f"the joiner job {job_id} on Flink at {url} is {state}, not RUNNING{cause}. "
                          f"See {url}/#/job/running/{job_id}/exceptions. Just after a (re)start this passes on "
                          "retry; if it keeps restarting, fix the cause, cancel the job in the Flink UI "
                          "and run 'make joiner-start'")
    if last.get("state") and last["state"] not in flinkjobs.TERMINAL:
        raise HealthError(f"the joiner job {last['job_id']} (remembered in joiner.json) is {last['state']} on Flink "
                          f"at {url} but not named '{name}': the joiner's topics changed since it was started; "
                          "cancel it in the Flink UI, then run 'make joiner-start'")
    if last.get("savepoint"):
        raise HealthError(f"no joiner job runs on Flink at {url}; it was stopped with savepoint {last['savepoint']}: "
                          "run 'make joiner-resume'")
    if last.get("job_id"):
        cause = f": {last['cause']}" if last.get("cause") else ""
        raise HealthError(f"the joiner job is not RUNNING on Flink at {url} (job {last['job_id']} "
                          f"state {last.get('state') or 'unknown to Flink'}{cause}); "
                          "run 'make joiner-resume SAVEPOINT=hdfs://...' from a savepoint or 'make joiner-start'")
    raise HealthError(f"no joiner job named '{name}' runs on Flink at {url}, and none was started from this stack: "
                      "run 'make joiner-start'")


def partition_lag(committed: int | None, beginning: int, end: int) -> int:
    """Records of one partition its group has not committed past. A partition without a
    commit is read from its beginning (the joiner starts from committed offsets, else earliest)."""
    return max(0, end - (beginning if committed is None or committed < beginning else committed))


def judge_lag(groups: dict[str, dict], max_lag: int, bootstrap: str) -> dict:
    """Fail when a group's ``lag`` (figures from :func:`group_lag`) exceeds ``max_lag`` records."""
    behind = [f"group '{group}' is {g['lag']:,} records behind {', '.join(g['topics'])} "
              f"({', '.join(f'{p}={n:,}' for p, n in g['partitions'].items())})"
              for group, g in groups.items() if g["lag"] > max_lag]
    if behind:
        raise HealthError(f"consumer lag above {max_lag:,} records at Kafka {bootstrap}: {'; '.join(behind)}. "
                          "Flink commits offsets only on checkpoints: check that the joiner runs and completes "
                          "checkpoints ('make joiner-status', the job's Checkpoints tab); if it does and still falls "
                          "behind, give it more parallelism (joiner.parallelism, flink.task_slots) "
                          "or raise health.max_lag_records")
    return {"max_lag_records": max_lag, "groups": groups}


def judge_freshness(topic: str, newest_ms: int | None, now_s: float, max_age_s: float, bootstrap: str) -> dict:
    """Fail when ``topic``'s newest committed record (``newest_ms``, None: none) is older than ``max_age_s``."""
    if newest_ms is None:
        raise HealthError(f"topic '{topic}' at Kafka {bootstrap} holds no committed record: the joiner has not "
                          "written an example yet (or retention removed them all). Check that it runs "
                          "('make joiner-status') and that traffic reaches its input topics")
    age_s = max(0.0, now_s - newest_ms / 1000)
    newest = datetime.fromtimestamp(newest_ms / 1000, timezone.utc).isoformat(timespec="seconds")
    if age_s > max_age_s:
        raise HealthError(f"the newest committed record on topic '{topic}' at Kafka {bootstrap} is {age_s:,.0f} s old "
                          f"(written {newest}; limit {max_age_s:,.0f} s). If the joiner runs and keeps up "
                          "(joiner_running and consumer_lag pass), no traffic reaches its input topics: check the "
                          "model server and the event collector; otherwise fix the joiner first")
    return {"topic": topic, "newest": newest, "age_s": round(age_s, 1), "max_age_s": max_age_s}


# -- checks -----------------------------------------------------------------------------------
def joiner_running(cfg: FlywheelConfig) -> dict:
    """The joiner's Flink job is RUNNING (exactly one of it): ``{job_id, state, ui}``."""
    name, url = joiner_job.job_name(cfg), cfg.flink_url
    try:
        states = {job_id: flinkjobs.state(cfg, job_id) for job_id in flinkjobs.running(cfg, name)}
        last = joiner_job.record(cfg)
        if not states and last.get("job_id"):
            last = {**last, **_ended(cfg, last["job_id"])}
        elif states and set(states.values()) != {"RUNNING"}:
            last = {**last, "cause": _cause(cfg, next(iter(states)))}
    except requests.RequestException as exc:
        raise HealthError(f"Flink at {url} did not answer ({exc}): 'make status' shows whether it runs, "
                          "'make up' starts it") from exc
    return judge_joiner(name, states, last, url)


def consumer_lag(cfg: FlywheelConfig, groups: dict[str, list[str]] | None = None) -> dict:
    """Lag of each consumer group on its topics (``{group: [topic, ...]}``; default: the
    joiner's group on its input topics, the landing's on the examples topic)."""
    if groups is None:
        j = cfg.joiner
        groups = {j.group: [j.features_topic, j.actions_topic]}
        if j.examples_dir:
            groups[f"{j.group}-landing"] = [j.examples_topic]
    with _kafka(cfg) as (admin, consumer):
        groups = {group: group_lag(admin, consumer, group, topics, cfg.kafka_bootstrap)
                  for group, topics in groups.items()}
    return judge_lag(groups, cfg.health.max_lag_records, cfg.kafka_bootstrap)


def freshness(cfg: FlywheelConfig, topic: str | None = None) -> dict:
    """The newest committed record on ``topic`` (default ``joiner.examples_topic``) is fresh."""
    topic = topic or cfg.joiner.examples_topic
    with _kafka(cfg) as (_, consumer):
        newest_ms = newest_timestamp_ms(consumer, topic, cfg.kafka_bootstrap, cfg.health.timeout_s)
    return judge_freshness(topic, newest_ms, time.time(), cfg.health.max_example_age_s, cfg.kafka_bootstrap)


CHECKS = {"joiner_running": joiner_running, "consumer_lag": consumer_lag, "freshness": freshness}


# -- requests ---------------------------------------------------------------------------------
def group_lag(admin: KafkaAdminClient, consumer: KafkaConsumer, group: str, topics: list[str], bootstrap: str) -> dict:
    """``{topics, lag, partitions: {"topic/p": lag}, uncommitted: ["topic/p", ...]}`` of ``group``:
    committed group offsets against the read_committed end offsets."""
    parts = [tp for topic in topics for tp in _partitions(consumer, topic, bootstrap)]
    committed = {tp: meta.offset for tp, meta in admin.list_group_offsets(group).get(group, {}).items()
                 if meta.offset >= 0}
    beginning, end = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
    lags = {f"{tp.topic}/{tp.partition}": partition_lag(committed.get(tp), beginning[tp], end[tp]) for tp in parts}
    return {"topics": topics, "lag": sum(lags.values()), "partitions": lags,
            "uncommitted": [f"{tp.topic}/{tp.partition}" for tp in parts if tp not in committed]}


def newest_timestamp_ms(consumer: KafkaConsumer, topic: str, bootstrap: str, timeout_s: float) -> int | None:
    """Timestamp (ms) of the newest committed record on ``topic``; None when it holds none.

    Reads each partition's tail backwards in growing windows: the last offsets may be
    transaction markers or records of aborted transactions, which read_committed skips.
    """
    parts = _partitions(consumer, topic, bootstrap)
    beginning, end = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
    newest = None
    for tp in parts:
        window, start = TAIL_RECORDS, end[tp]
        while start > beginning[tp]:
            start = max(beginning[tp], end[tp] - window)
            found = _max_timestamp(consumer, tp, start, end[tp], timeout_s, bootstrap)
            if found is not None:
                newest = max(found, newest or found)
                break
            window *= 4
    return newest


def _max_timestamp(consumer: KafkaConsumer, tp: TopicPartition, start: int, end: int, timeout_s: float,
                   bootstrap: str) -> int | None:
    consumer.assign([tp])
    consumer.seek(tp, start)
    deadline, newest = time.monotonic() + timeout_s, None
    while consumer.position(tp) < end:
        if time.monotonic() > deadline:
            raise HealthError(f"reading {tp.topic}/{tp.partition} offsets {start}..{end} from Kafka {bootstrap} "
                              f"took over {timeout_s:.0f} s; is the broker overloaded? ('make status')")
        for record in consumer.poll(timeout_ms=500).get(tp, []):
            if record.offset < end:
                newest = max(record.timestamp, newest or record.timestamp)
    return newest


def _partitions(consumer: KafkaConsumer, topic: str, bootstrap: str) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise HealthError(f"topic '{topic}' does not exist at Kafka {bootstrap}, or the monitor login may not describe "
                          "it: 'make up' creates the configured topics (kafka.topics) and their grants "
                          "(kafka.acls); check the joiner's *_topic settings")
    return [TopicPartition(topic, p) for p in sorted(partitions)]


@contextmanager
def _kafka(cfg: FlywheelConfig):
    """An admin client and a read_committed consumer without a group; Kafka errors -> HealthError."""
    timeout_ms = int(cfg.health.timeout_s * 1000)
    admin = consumer = None
    try:
        admin = KafkaAdminClient(**kafka_args(cfg, "monitor"), client_id="flywheel-health",
                                 request_timeout_ms=timeout_ms)
        consumer = KafkaConsumer(**kafka_args(cfg, "monitor"), client_id="flywheel-health", group_id=None,
                                 isolation_level="read_committed", enable_auto_commit=False,
                                 request_timeout_ms=timeout_ms)
        yield admin, consumer
    except KafkaError as exc:
        raise HealthError(f"Kafka at {cfg.kafka_bootstrap} did not answer ({exc!r}): 'make status' shows whether "
                          "it runs, 'make up' starts it") from exc
    finally:
        for client in (consumer, admin):
            if client is not None:
                client.close()


def _ended(cfg: FlywheelConfig, job_id: str) -> dict:
    """``state`` and ``cause`` of a job that no longer runs (``state`` None once Flink forgot it)."""
    try:
        return {"state": flinkjobs.state(cfg, job_id), "cause": _cause(cfg, job_id)}
    except requests.HTTPError:
        return {"state": None}


def _cause(cfg: FlywheelConfig, job_id: str) -> str:
    """The first line of the job's root exception, shortened for a message ("" when none)."""
    lines = (flinkjobs.exceptions(cfg, job_id) or "").strip().splitlines()
    return lines[0][:300] if lines else ""


def main() -> int:
    """Run every check once; print figures or the failure; exit 1 if any failed."""
    cfg, failed = load_config(), 0
    for name, check in CHECKS.items():
        try:
            print(f"{name}: ok {check(cfg)}")
        except HealthError as exc:
            failed += 1
            print(f"{name}: FAILED {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
