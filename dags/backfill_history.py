"""# backfill_history

Checks an interaction history against the data contract (`docs/data.md`: a contract folder,
a MovieLens release or a Taobao UserBehavior log) and lands it as example partitions on HDFS,
exactly where
and how the joiner lands live examples (`joiner.examples_dir/dt=/hour=`, Parquet, `_SUCCESS`
per hour), so `daily_retrain` has data before any live traffic and a fresh stack can
bootstrap a `champion`.

The history is moved to end on `end_date` (empty: yesterday) and squeezed into `days` days
when given. Each day it writes is replaced whole: re-running is safe. Actions become task
labels through the config's `data.actions`; a history with impressions gives its own
negatives, one without (MovieLens) gets `negatives` sampled items per positive.

Code: `pipelines/batch/backfill.py`. By hand: `flywheel import <folder>`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, Param, dag, task

from flywheel.config import load_config
from flywheel.paths import ML_ENV_PYTHON

CFG = load_config()


@dag(
    dag_id="backfill_history",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["flywheel", "batch", "backfill"],
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "execution_timeout": timedelta(hours=2)},
    params={
        "data": Param("", type="string", title="History folder",
                      description="a folder on the Airflow host: items + interactions (the data contract), "
                                  "a MovieLens release or UserBehavior.csv; empty: data.path, else the default data"),
        "days": Param(14, type=["null", "number"], minimum=1, title="Days",
                      description="squeeze the history into this many days; empty: keep its span"),
        "end_date": Param("", type="string", pattern=r"^(\d{4}-\d{2}-\d{2})?$", title="Last day",
                          description="YYYY-MM-DD; empty: yesterday (UTC)"),
        "negatives": Param(4, type="integer", minimum=0, maximum=50, title="Sampled negatives per positive",
                           description="only for histories without impressions (MovieLens)"),
    },
)
def backfill_history():
    @task.external_python(python=ML_ENV_PYTHON, expect_airflow=False,
                          outlets=[Asset(f"{CFG.hdfs_uri}{CFG.joiner.examples_dir}")])
    def land(data: str, days: str, end_date: str, negatives: str) -> dict:
        """Land the history; returns examples written per day."""
        from datetime import date

        import datasets
        from flywheel.config import load_config
        from pipelines.batch.backfill import backfill

        cfg = load_config()
        data = str(datasets.resolve(data or cfg.data.path, cfg.data))
        return backfill(cfg, data, date.fromisoformat(end_date) if end_date else None,
                        float(days) if days not in ("", "None") else None, int(negatives))

    land("{{ params.data }}", "{{ params.days }}", "{{ params.end_date }}", "{{ params.negatives }}")


backfill_history()
