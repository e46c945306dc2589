"""# stack_smoke

Crosses the batch services of the local stack once, on demand:

1. **write_partition** (ML environment, `external_python`): writes `rows` JSON lines to HDFS
   over WebHDFS under `<hdfs.root>/smoke/airflow/<run id>/`, replacing that partition (a retry
   or re-run is idempotent), and logs an MLflow run (param `rows`, metric `rows_written`) in
   experiment `flywheel-smoke`, tagged `airflow_run_id`.
2. **spark_count** (`spark-submit`, `spark_default` connection, driver on the stack host):
   reads the partition over `hdfs://` and fails unless it holds exactly `rows` rows.

Trigger it from the UI (the form asks for `rows`) or with
`POST /api/v2/dags/stack_smoke/dagRuns {"logical_date": null, "conf": {"rows": 100}}`.
Code: `pipelines/batch/smoke_count.py`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, dag, task

from flywheel.config import load_config
from flywheel.paths import ML_ENV_PYTHON, REPO_ROOT, SPARK_SUBMIT
from flywheel.spark import spark_env

CFG = load_config()
APP = REPO_ROOT / "pipelines" / "batch" / "smoke_count.py"


@dag(
    dag_id="stack_smoke",
    schedule=None,
    catchup=False,
    tags=["flywheel", "smoke"],
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=10),
                  "execution_timeout": timedelta(minutes=10)},
    dagrun_timeout=timedelta(minutes=30),
    params={"rows": Param(100, type="integer", minimum=0, maximum=1_000_000, title="Rows",
                          description="JSON lines to write to HDFS and count back with Spark")},
)
def stack_smoke():
    @task.external_python(python=ML_ENV_PYTHON, expect_airflow=False)
    def write_partition(run_id: str, rows: str) -> str:
        """Write the run's HDFS partition and log its MLflow run; return the hdfs:// URI."""
        from flywheel.config import load_config
        from pipelines.batch.smoke_count import log_run, write_rows

        cfg = load_config()
        uri = write_rows(cfg, run_id, int(rows))
        log_run(cfg, run_id, int(rows), uri)
        return uri

    partition = write_partition(run_id="{{ run_id }}", rows="{{ params.rows }}")
    SparkSubmitOperator(
        task_id="spark_count",
        application=str(APP),
        conn_id="spark_default",
        spark_binary=str(SPARK_SUBMIT),
        name="flywheel-smoke-count",
        driver_memory=CFG.spark.driver_memory,
        conf={"spark.driver.host": CFG.stack.host, "spark.driver.bindAddress": CFG.stack.host,
              "spark.ui.enabled": "false", "spark.log.level": "WARN"},
        env_vars={**spark_env(CFG), "PYSPARK_PYTHON": ML_ENV_PYTHON},  # HADOOP_CONF_DIR, SPARK_LOCAL_IP
        application_args=["--path", partition, "--expect", "{{ params.rows }}"],
    )


stack_smoke()
