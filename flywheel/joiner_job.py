"""Run the stack's joiner job: start it, stop it with a savepoint, resume it from one.

    flywheel joiner start      # submit (refused if one runs); arguments from the `joiner` config
    flywheel joiner stop       # stop with a savepoint; its location is remembered
    flywheel joiner resume     # submit again from the remembered savepoint (or --savepoint)
    flywheel joiner status

The remembered job id and savepoint live in ``<state_dir>/joiner.json``. A savepoint holds the
Kafka offsets, the pending features and actions and the open Parquet files, so stop + resume
neither loses nor duplicates an example (the Kafka sinks are transactional).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kafka import KafkaAdminClient

from flywheel import flinkjobs
from flywheel.config import REPO_ROOT, FlywheelConfig
from flywheel.stack.base import StackError

SCRIPT = REPO_ROOT / "streaming" / "jobs" / "joiner.py"


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
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka_bootstrap)
    try:
        missing = sorted(set(topics.values()) - set(admin.list_topics()))
    finally:
        admin.close()
    if missing:
        raise StackError(f"Kafka topics {missing} do not exist: 'make up' creates the configured ones "
                         "(kafka.topics); set joiner.*_topic to existing topics or add them there")
    args = {
        "bootstrap": cfg.kafka_bootstrap, **topics,
        "label-window-s": j.label_window_s, "retention-s": j.retention_days * 86_400,
        "negative-rate": j.negative_rate,
        "negative-rates": ",".join(f"{task}={rate}" for task, rate in j.negative_rates.items()),
        "out-of-orderness-s": j.out_of_orderness_s,
        "idle-timeout-s": j.idle_timeout_s, "parallelism": j.parallelism or cfg.flink.parallelism,
        "group": j.group, "delivery": j.delivery, "land-lateness-s": j.land_lateness_s,
        "land-path": f"{cfg.hdfs_uri}{j.examples_dir}" if j.examples_dir else "",
    }
    return [part for name, value in args.items() for part in (f"--{name}", str(value))]


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
