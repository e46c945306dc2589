"""# ps_snapshot

Snapshots every training parameter-server shard to HDFS (`paramserver.snapshot_dir`), marks
the snapshot complete with `_MANIFEST.json`, and logs it to MLflow (experiment
`paramserver-snapshots`: manifest artifact, rows per table, HDFS URI tag).

A restarted training PS restores the newest complete snapshot; a new serving replica loads it
and consumes the deltas topic from the offset in its manifest. The online trainer also takes
snapshots with the Kafka offsets of the examples they cover; this DAG is the scheduled
safety net. Code: `paramserver/snapshots.py`.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import dag, task

from flywheel.paths import ML_PYTHON

ML_ENV_PYTHON = os.environ.get("FLYWHEEL_ML_PYTHON", str(ML_PYTHON))


@dag(
    dag_id="ps_snapshot",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["flywheel", "paramserver"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "execution_timeout": timedelta(minutes=30)},
)
def ps_snapshot():
    @task.external_python(python=ML_ENV_PYTHON, expect_airflow=False)
    def snapshot() -> str:
        """Snapshot all training shards; return the snapshot's HDFS URI."""
        from flywheel.config import load_config
        from paramserver.snapshots import snapshot_all

        return snapshot_all(load_config())["uri"]

    snapshot()


ps_snapshot()
