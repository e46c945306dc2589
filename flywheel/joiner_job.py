"""Run the stack's joiner job: start it, stop it with a savepoint, resume it from one.

    flywheel joiner start      # submit (refused if one runs); arguments from the `joiner` config
    flywheel joiner stop       # stop with a savepoint; its location is remembered
    flywheel joiner resume     # submit again from the remembered savepoint (or --savepoint)
    flywheel joiner status
    flywheel joiner keep       # the keeper: resubmits a lost joiner from its newest checkpoint

The remembered job id and savepoint live in ``<state_dir>/joiner.json``. A savepoint holds the
Kafka offsets, the pending features and actions and the open Parquet files, so stop + resume
neither loses nor duplicates an example (the Kafka sinks are transactional).

The Flink session cluster has no high availability (no ZooKeeper or Kubernetes here), so a
JobManager that dies takes its jobs with it, and the restarted one runs nothing. The keeper
(:class:`Keeper`, the supervised ``joiner-keeper`` program) notices when the joiner the record
says should run has been gone for ``joiner.keep_grace_s`` and submits it again from the newest
completed checkpoint on HDFS (checkpoints are retained, see flywheel/stack/flink.py). A TaskManager
that dies is Flink's own business: the job restarts from its checkpoint once one is back.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import requests

from kafka import KafkaAdminClient

from flywheel import flinkjobs
from flywheel.hdfs import webhdfs
from flywheel.config import REPO_ROOT, FlywheelConfig
from flywheel.secrets import flink_auth, kafka_args
from flywheel.stack.base import StackError

SCRIPT = REPO_ROOT / "streaming" / "jobs" / "joiner.py"
log = logging.getLogger(__name__)


def job_name(cfg: FlywheelConfig) -> str:
    """The Flink job name the joiner gives itself (streaming/jobs/joiner.py ``main``)."""
    j = cfg.joiner
    return f"joiner {j.features_topic} + {j.actions_topic} -> {j.examples_topic}"


def _record_path(cfg: FlywheelConfig) -> Path:
    return cfg.stack.root / "joiner.json"


def record(cfg: FlywheelConfig) -> dict:
    """What was last remembered: ``job_id``, ``savepoint`` (either may be None)."""
    path = _record_path(cfg)
    return json.loads(path.read_text()) if path.exists() else {"job_id": None, "savepoint": None}


def _remember(cfg: FlywheelConfig, **fields) -> None:
    path = _record_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**record(cfg), **fields, "updated": time.time()}, indent=2))


def arguments(cfg: FlywheelConfig) -> list[str]:
    """The joiner's command line, from the config."""
    j = cfg.joiner
    topics = {"features-topic": j.features_topic, "actions-topic": j.actions_topic,
              "examples-topic": j.examples_topic, "dead-letter-topic": j.dead_letter_topic}
    admin = KafkaAdminClient(**kafka_args(cfg, "joiner"))  # the job's own login: it sees its topics
    try:
        missing = sorted(set(topics.values()) - set(admin.list_topics()))
    finally:
        admin.close()
    if missing:
        raise StackError(f"Kafka topics {missing} do not exist: 'make up' creates the configured ones "
                         "(kafka.topics); set joiner.*_topic to existing topics or add them there")
    args = {
        **topics,
        "label-window-s": j.label_window_s, "retention-s": j.retention_days * 86_400,
        "negative-rate": j.negative_rate,
        "negative-rates": ",".join(f"{task}={rate}" for task, rate in j.negative_rates.items()),
        "out-of-orderness-s": j.out_of_orderness_s,
        "idle-timeout-s": j.idle_timeout_s, "parallelism": j.parallelism or cfg.flink.parallelism,
        "group": j.group, "delivery": j.delivery, "land-lateness-s": j.land_lateness_s,
        "land-path": f"{cfg.hdfs_uri}{j.examples_dir}" if j.examples_dir else "",
    }
    # the online trainer's delayed feedback (online.delayed_feedback) decides what the joiner sends it
    flags = ["--provisional-negatives"] if cfg.online.delayed_feedback == "fnw" else []
    return (flinkjobs.kafka_argv(cfg, "joiner") + [part for name, value in args.items() for part in (f"--{name}", str(value))]
            + flags)


def start(cfg: FlywheelConfig, savepoint: str | None = None) -> str:
    """Submit the joiner (from ``savepoint``, if given) and wait until it runs; its job id."""
    if running := flinkjobs.running(cfg, job_name(cfg)):
        raise StackError(f"a joiner already runs (job {running[0]}); 'flywheel joiner stop' first")
    job_id = flinkjobs.submit(cfg, SCRIPT, arguments(cfg), savepoint=savepoint)
    # the savepoint is used up: resuming the new job later must start from its own stop
    _remember(cfg, job_id=job_id, resumed_from=savepoint, savepoint=None)
    flinkjobs.wait(cfg, job_id, until={"RUNNING"}, timeout_s=120)
    return job_id


def stop(cfg: FlywheelConfig) -> str:
    """Stop the running joiner with a savepoint; its location (also remembered for resume)."""
    running = flinkjobs.running(cfg, job_name(cfg))
    if not running:
        raise StackError("no joiner is running; 'flywheel joiner status' shows the last savepoint")
    location = flinkjobs.stop_with_savepoint(cfg, running[0])
    _remember(cfg, job_id=None, savepoint=location)
    return location


def cancel(cfg: FlywheelConfig, job_id: str) -> None:
    """Cancel the joiner job ``job_id`` without a savepoint and forget it (the keeper leaves a
    forgotten joiner alone)."""
    flinkjobs.cancel(cfg, job_id)
    if record(cfg).get("job_id") == job_id:
        _remember(cfg, job_id=None)


def resume(cfg: FlywheelConfig, savepoint: str | None = None) -> str:
    """Start from ``savepoint`` or the one the last ``stop`` remembered; the new job id."""
    savepoint = savepoint or record(cfg)["savepoint"]
    if not savepoint:
        raise StackError("no savepoint to resume from: 'flywheel joiner stop' makes one "
                         "(or pass --savepoint hdfs://...)")
    return start(cfg, savepoint=savepoint)


def status(cfg: FlywheelConfig) -> dict:
    """Running joiner job ids, the remembered savepoint, and the Flink UI link."""
    return {"running": flinkjobs.running(cfg, job_name(cfg)), **record(cfg), "ui": cfg.flink_url}


def latest_checkpoint(cfg: FlywheelConfig, job_id: str) -> str | None:
    """``hdfs://.../<job_id>/chk-N`` of the job's newest completed checkpoint (one whose
    ``_metadata`` was written), or None."""
    fs = webhdfs(cfg)
    try:
        entries = fs.ls(f"{cfg.flink.checkpoint_dir}/{job_id}", detail=False)
    except FileNotFoundError:
        return None
    numbered = sorted((int(m.group(1)), path.rstrip("/")) for path in entries
                      if (m := re.search(r"/chk-(\d+)/?$", path)))
    for _, path in reversed(numbered):
        if fs.exists(f"{path}/_metadata"):
            return f"{cfg.hdfs_uri}{path}"
    return None


class Keeper:
    """Keeps the joiner the record names running (see the module docstring).

    ``check()`` is one look; ``run()`` looks every ``joiner.keep_interval_s``. Nothing is done
    while the record holds no job (stopped with a savepoint, or never started), while Flink does
    not answer, or while the job is merely restarting. After a resubmission the wait before the
    next one doubles (a job that keeps failing is not resubmitted in a tight loop), and is reset
    once a job has run for a whole grace period.
    """

    ALIVE = {"INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "FAILING", "CANCELLING", "RECONCILING"}

    def __init__(self, cfg: FlywheelConfig, clock=time.monotonic):
        self.cfg, self.clock = cfg, clock
        self.gone_since: float | None = None
        self.running_since: float | None = None
        self.backoff = 1
        self.resubmitted = 0

    def _alive(self, job_id: str) -> bool:
        if flinkjobs.running(self.cfg, job_name(self.cfg)):
            return True
        resp = requests.get(f"{self.cfg.flink_url}/jobs/{job_id}", auth=flink_auth(self.cfg), timeout=5)
        return resp.ok and resp.json().get("state") in self.ALIVE

    def check(self) -> str | None:
        """One look; the new job id when the joiner was resubmitted, else None."""
        job_id = record(self.cfg).get("job_id")
        if not job_id:
            self.gone_since = None
            return None
        try:
            alive = self._alive(job_id)
        except requests.RequestException:  # the JobManager is down or restarting: wait for it
            return None
        now = self.clock()
        if alive:
            self.gone_since = None
            self.running_since = now if self.running_since is None else self.running_since
            if now - self.running_since >= self.cfg.joiner.keep_grace_s:
                self.backoff = 1
            return None
        self.running_since = None
        self.gone_since = now if self.gone_since is None else self.gone_since
        if now - self.gone_since < self.cfg.joiner.keep_grace_s * self.backoff:
            return None
        checkpoint = latest_checkpoint(self.cfg, job_id) or record(self.cfg).get("resumed_from")
        log.warning("joiner job %s is gone (its JobManager restarted, or it failed); resubmitting from %s",
                    job_id, checkpoint or "the committed Kafka offsets (no checkpoint found)")
        new = start(self.cfg, savepoint=checkpoint)
        self.gone_since, self.backoff, self.resubmitted = None, min(self.backoff * 2, 32), self.resubmitted + 1
        log.warning("joiner resubmitted as job %s", new)
        return new

    def run(self, stop=lambda: False) -> None:
        beat = self.beat_path(self.cfg)
        beat.parent.mkdir(parents=True, exist_ok=True)
        while not stop():
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the keeper itself must not die of a failed submit
                log.exception("joiner keeper: the check failed; trying again in %ss", self.cfg.joiner.keep_interval_s)
            beat.write_text(f"{time.time()} resubmitted={self.resubmitted}\n")
            time.sleep(self.cfg.joiner.keep_interval_s)

    @staticmethod
    def beat_path(cfg: FlywheelConfig) -> Path:
        return cfg.stack.root / "joiner-keeper.beat"

    @classmethod
    def beating(cls, cfg: FlywheelConfig) -> bool:
        """True when a keeper finished a look within the last three intervals (its health)."""
        path = cls.beat_path(cfg)
        return path.exists() and time.time() - path.stat().st_mtime < 3 * cfg.joiner.keep_interval_s + 5
