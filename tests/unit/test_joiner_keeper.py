"""The joiner keeper's decisions: resubmit a joiner the record says should run once it has been
gone for the grace period, from its newest checkpoint; leave alone a stopped, running or
restarting one, and a JobManager that does not answer; back off between resubmissions.
Flink and HDFS are fakes here (what they do is covered by the integration tests)."""

import pytest
import requests

from flywheel import joiner_job
from flywheel.config import load_config


class World:
    def __init__(self, monkeypatch, tmp_path):
        self.cfg = load_config(files=[], environ={"FLYWHEEL__STACK__STATE_DIR": str(tmp_path),
                                                  "FLYWHEEL__JOINER__KEEP_GRACE_S": "10"})
        self.now, self.jobs, self.flink_up, self.submitted = 0.0, {}, True, []
        self.checkpoints = {"job-a": "hdfs://nn/ck/job-a/chk-7"}
        monkeypatch.setattr(joiner_job.flinkjobs, "running", self.running)
        monkeypatch.setattr(joiner_job.requests, "get", self.get)
        monkeypatch.setattr(joiner_job, "latest_checkpoint", lambda cfg, job: self.checkpoints.get(job))
        monkeypatch.setattr(joiner_job.flinkjobs, "submit", self.submit)
        monkeypatch.setattr(joiner_job.flinkjobs, "wait", lambda *a, **k: "RUNNING")
        monkeypatch.setattr(joiner_job, "arguments", lambda cfg: ["--bootstrap", "fake:1"])
        joiner_job._remember(self.cfg, job_id="job-a", savepoint=None)
        self.keeper = joiner_job.Keeper(self.cfg, clock=lambda: self.now)

    def running(self, cfg, name):
        if not self.flink_up:
            raise requests.ConnectionError("down")
        return [j for j, state in self.jobs.items() if state == "RUNNING"]

    def get(self, url, timeout, auth=None):
        if not self.flink_up:
            raise requests.ConnectionError("down")
        job = url.rsplit("/", 1)[1]

        class R:
            ok = job in self.jobs
            def json(r):  # noqa: N805
                return {"state": self.jobs[job]}
        return R()

    def submit(self, cfg, script, args, savepoint=None):
        self.submitted.append(savepoint)
        job = f"job-{len(self.submitted) + 1}"
        self.jobs[job] = "RUNNING"
        return job

    def at(self, t):
        self.now = t
        return self.keeper.check()


@pytest.fixture
def world(monkeypatch, tmp_path):
    return World(monkeypatch, tmp_path)


def test_a_lost_joiner_is_resubmitted_from_its_newest_checkpoint_after_the_grace(world):
    world.jobs["job-a"] = "RUNNING"
    assert world.at(0) is None
    del world.jobs["job-a"]  # the JobManager restarted without it
    assert world.at(1) is None and world.at(10) is None and world.submitted == []
    assert world.at(11.5) == "job-2"
    assert world.submitted == ["hdfs://nn/ck/job-a/chk-7"]
    assert joiner_job.record(world.cfg)["job_id"] == "job-2"


def test_restarting_stopped_or_unreachable_joiners_are_left_alone(world):
    world.jobs["job-a"] = "RESTARTING"  # a TaskManager died: Flink restarts it itself
    assert world.at(0) is None and world.at(100) is None
    world.flink_up = False  # the JobManager is down: nothing to submit to
    assert world.at(200) is None and world.at(300) is None
    world.flink_up = True
    joiner_job._remember(world.cfg, job_id=None, savepoint="hdfs://nn/sp/1")  # stopped on purpose
    world.jobs.clear()
    assert world.at(400) is None and world.at(500) is None
    assert world.submitted == []


def test_a_job_that_keeps_failing_is_resubmitted_with_growing_waits(world):
    world.jobs["job-a"] = "FAILED"
    assert world.at(0) is None
    assert world.at(10) == "job-2"
    world.jobs["job-2"] = "FAILED"  # failed before its first checkpoint: back to job-a's
    assert world.at(11) is None and world.at(30) is None
    assert world.at(31.5) == "job-3"  # waited 2 x grace
    assert world.submitted == ["hdfs://nn/ck/job-a/chk-7", "hdfs://nn/ck/job-a/chk-7"]
