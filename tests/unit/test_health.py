"""The stream-health decisions (flywheel/health.py), apart from Kafka and Flink."""

import pytest

from flywheel.health import HealthError, judge_freshness, judge_joiner, judge_lag, partition_lag

NAME, URL, BOOTSTRAP = "joiner features + actions -> examples", "http://127.0.0.1:8081", "127.0.0.1:9092"
NOTHING = {"job_id": None, "savepoint": None}
NOW = 1_795_500_000.0


# -- joiner_running ---------------------------------------------------------------------------
def test_one_running_joiner_passes_with_its_id_and_link():
    figures = judge_joiner(NAME, {"abc": "RUNNING"}, NOTHING, URL)
    assert figures == {"job_id": "abc", "state": "RUNNING", "ui": f"{URL}/#/job/running/abc/overview"}


def test_a_restarting_joiner_fails_with_its_state_and_cause():
    with pytest.raises(HealthError) as failed:
        judge_joiner(NAME, {"abc": "RESTARTING"}, {**NOTHING, "cause": "java.io.IOException: disk full"}, URL)
    message = str(failed.value)
    assert "abc" in message and "RESTARTING, not RUNNING" in message and URL in message
    assert "disk full" in message and "make joiner-start" in message


def test_a_stopped_joiner_points_at_resume_with_its_savepoint():
    with pytest.raises(HealthError, match=r"stopped with savepoint hdfs://sp/1: run 'make joiner-resume'"):
        judge_joiner(NAME, {}, {"job_id": None, "savepoint": "hdfs://sp/1"}, URL)


def test_an_ended_joiner_names_its_state_and_the_commands():
    last = {"job_id": "abc", "savepoint": None, "state": "FAILED", "cause": "NullPointerException"}
    with pytest.raises(HealthError) as failed:
        judge_joiner(NAME, {}, last, URL)
    message = str(failed.value)
    assert f"the joiner job is not RUNNING on Flink at {URL} (job abc state FAILED: NullPointerException)" in message
    assert "'make joiner-start'" in message and "make joiner-resume" in message


def test_a_joiner_flink_forgot_says_so():
    with pytest.raises(HealthError, match="state unknown to Flink"):
        judge_joiner(NAME, {}, {"job_id": "abc", "savepoint": None, "state": None}, URL)


def test_a_never_started_joiner_says_start_it():
    with pytest.raises(HealthError, match=r"none was started from this stack: run 'make joiner-start'"):
        judge_joiner(NAME, {}, NOTHING, URL)


def test_a_remembered_job_running_under_another_name_says_the_settings_changed():
    with pytest.raises(HealthError, match=r"job abc \(remembered in joiner.json\) is RUNNING .* topics changed"):
        judge_joiner(NAME, {}, {"job_id": "abc", "savepoint": None, "state": "RUNNING"}, URL)


def test_two_joiners_fail_because_they_share_group_and_transactions():
    with pytest.raises(HealthError, match=r"2 joiner jobs .* \(a, b\).*cancel all but one"):
        judge_joiner(NAME, {"a": "RUNNING", "b": "RUNNING"}, NOTHING, URL)


# -- consumer_lag -----------------------------------------------------------------------------
@pytest.mark.parametrize("committed, beginning, end, lag", [
    (90, 0, 100, 10),
    (100, 0, 100, 0),
    (None, 0, 100, 100),   # never committed: read from the beginning
    (None, 40, 100, 60),   # ... which retention may have moved
    (10, 40, 100, 60),     # a commit behind the retained log counts from the beginning too
    (120, 0, 100, 0),      # past the read_committed end (open transaction): not negative
    (None, 0, 0, 0),       # empty partition
])
def test_partition_lag(committed, beginning, end, lag):
    assert partition_lag(committed, beginning, end) == lag


def group(lag_by_partition: dict[str, int]) -> dict:
    return {"topics": sorted({p.split("/")[0] for p in lag_by_partition}), "lag": sum(lag_by_partition.values()),
            "partitions": lag_by_partition, "uncommitted": []}


def test_lag_at_the_limit_passes_with_figures():
    groups = {"flywheel-joiner": group({"features/0": 60, "actions/0": 40})}
    assert judge_lag(groups, 100, BOOTSTRAP) == {"max_lag_records": 100, "groups": groups}


def test_lag_above_the_limit_names_group_topics_partitions_and_what_to_do():
    groups = {"flywheel-joiner": group({"features/0": 60, "actions/0": 40}),
              "flywheel-joiner-landing": group({"examples/0": 1500, "examples/1": 0})}
    with pytest.raises(HealthError) as failed:
        judge_lag(groups, 100, BOOTSTRAP)
    message = str(failed.value)
    assert f"consumer lag above 100 records at Kafka {BOOTSTRAP}" in message
    assert "group 'flywheel-joiner-landing' is 1,500 records behind examples (examples/0=1,500, examples/1=0)" in message
    assert "'flywheel-joiner' is" not in message  # within the limit
    assert "checkpoints" in message and "joiner.parallelism" in message


# -- freshness --------------------------------------------------------------------------------
def test_a_fresh_record_passes_with_its_age():
    figures = judge_freshness("examples", int((NOW - 30) * 1000), NOW, 900, BOOTSTRAP)
    assert figures["age_s"] == 30 and figures["topic"] == "examples" and figures["max_age_s"] == 900
    assert figures["newest"].endswith("+00:00")


def test_a_record_from_the_future_is_fresh_not_negative():
    assert judge_freshness("examples", int((NOW + 5) * 1000), NOW, 900, BOOTSTRAP)["age_s"] == 0


def test_a_stale_topic_fails_with_age_limit_and_next_steps():
    with pytest.raises(HealthError) as failed:
        judge_freshness("examples", int((NOW - 3600) * 1000), NOW, 900, BOOTSTRAP)
    message = str(failed.value)
    assert f"newest committed record on topic 'examples' at Kafka {BOOTSTRAP} is 3,600 s old" in message
    assert "limit 900 s" in message and "model server" in message


def test_an_empty_topic_says_it_is_empty():
    with pytest.raises(HealthError, match=f"topic 'examples' at Kafka {BOOTSTRAP} holds no committed record"):
        judge_freshness("examples", None, NOW, 900, BOOTSTRAP)
