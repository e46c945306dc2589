"""# stream_health

Every 5 minutes, checks the streaming half of Flywheel. Each task runs one check of
`flywheel/health.py` in the ML environment, returns its figures (XCom, and the task log) and
fails with what is wrong, where and what to do. Thresholds: the `health` section of
`config/flywheel.yaml`. By hand: `.venv/ml/bin/python -m flywheel.health`.

| task | passes when | when it fails |
|---|---|---|
| **joiner_running** | exactly one Flink job named like the joiner is `RUNNING` | stopped with a savepoint: `make joiner-resume`; ended or never started: `make joiner-start`; restarting: read its exceptions in the Flink UI, fix the cause |
| **consumer_lag** | the joiner's group (`joiner.group`) on `features`/`actions`, and the landing's (`<group>-landing`) on `examples`, are at most `health.max_lag_records` behind | is the joiner running and completing checkpoints (offsets are committed only then)? If so it cannot keep up: more parallelism (`joiner.parallelism`, `flink.task_slots`) |
| **freshness** | the newest committed record on `examples` is at most `health.max_example_age_s` old | with the other two passing, no traffic reaches `features`/`actions`: check the model server and the event collector |

The tasks are independent, so one failing check does not hide the others' figures.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from flywheel.paths import ML_ENV_PYTHON

CHECKS = ("joiner_running", "consumer_lag", "freshness")  # flywheel.health.CHECKS


@dag(
    dag_id="stream_health",
    schedule="*/5 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["flywheel", "streaming", "health"],
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30), "execution_timeout": timedelta(minutes=2)},
    dagrun_timeout=timedelta(minutes=10),
)
def stream_health():
    @task.external_python(python=ML_ENV_PYTHON, expect_airflow=False)
    def check(name: str) -> dict:
        """Run one check of flywheel/health.py; its figures, or HealthError's message in the log."""
        from flywheel.config import load_config
        from flywheel.health import CHECKS

        figures = CHECKS[name](load_config())
        print(f"{name}: {figures}")
        return figures

    for name in CHECKS:
        check.override(task_id=name)(name)


stream_health()
