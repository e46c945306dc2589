"""# ps_snapshot

1. **snapshot**: snapshots every training parameter-server shard to HDFS
   (`paramserver.snapshot_dir`), marks the snapshot complete with `_MANIFEST.json`, and logs it
   to MLflow (experiment `paramserver-snapshots`: manifest artifact, rows per table, HDFS URI tag).
2. **prune**: deletes complete snapshots that are both beyond the newest
   `paramserver.snapshot_keep` and older than `paramserver.snapshot_max_age_days`, and
   incomplete ones older than a day; never the newest complete snapshot, the newest one the
   online trainer can replay from, or one an aliased MLflow model version names in its
   `snapshot_id` tag. It logs the ids it deleted (also its XCom); if MLflow does not answer it
   deletes nothing and fails.

A restarted training PS restores the newest complete snapshot; a new serving replica loads it
and consumes the deltas topic from the offset in its manifest. The online trainer also takes
snapshots with the Kafka offsets of the examples they cover; this DAG is the scheduled
safety net. Code: `paramserver/snapshots.py`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from flywheel.paths import ML_ENV_PYTHON



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

    @task.external_python(python=ML_ENV_PYTHON, expect_airflow=False)
    def prune() -> list[str]:
        """Delete snapshots beyond the configured retention; return their ids."""
        from flywheel.config import load_config
        from paramserver.snapshots import apply_retention

        cfg = load_config()
        deleted = apply_retention(cfg)
        print(f"deleted {len(deleted)} snapshots under {cfg.hdfs_uri}{cfg.paramserver.snapshot_dir}: "
              f"{', '.join(deleted) or 'none'}")
        return deleted

    snapshot() >> prune()


ps_snapshot()
