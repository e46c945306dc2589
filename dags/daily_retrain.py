"""# daily_retrain

Retrains the ranker (MMoE) and the retriever (Deep Retrieval) on the landed examples, beside
the continuous online updates, and publishes the result when it beats the `champion`.

1. **plan**: the evaluation day *D* (the `date` param, or the run's data interval start: a
   scheduled run evaluates on yesterday) and the `train_days` before it. Fails with a clear
   message when *D* or every training day has no landed examples (run `backfill_history`
   first on a fresh stack).
2. **negative_sampling** (Spark, `spark_default` connection): per-task down-sampling of the
   negatives and popularity-drawn retrieval negatives into `batch.training_dir/dt=*`,
   replacing those days.
3. **train**: `warm` starts the tables from the newest training-PS snapshot, `scratch` from
   nothing; trains `epochs` epochs, evaluates on *D* and logs to MLflow (experiment
   `daily-retrain`): params, loss curves, AUC per task, Recall/Precision/NDCG@K (items each
   user clicked in training excluded; `_raw` without; `_cold`/`_warm` users) beside the
   baselines on the same day (`popularity_*`: most clicked in the last `batch.popular_window_h`
   hours; `ease_*`: EASE), a plot, the model bundle,
   a new version of the registered model `flywheel`, and the PS snapshot it wrote (tags
   `snapshot_id`, `snapshot_uri`). A re-run with the same date, params and data reuses the
   finished run instead of training again.
4. **publish**: a candidate that does not beat the popularity baseline on `batch.gate_metric`
   is not published (the run's `gate_reason` says by how much); then the candidate and the
   champion are evaluated on the same day; the winner (or the candidate when `force_publish`)
   keeps/gets the alias `champion`. Publishing hands the
   candidate's snapshot to the training PS first, then moves the alias; model servers follow
   the alias (serving/loader.py).

Code: `pipelines/batch/` (retrain.py, negative_sampling.py, publish.py). By hand:
`flywheel retrain --date YYYY-MM-DD`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param, dag, task

from flywheel.config import load_config
from flywheel.paths import ML_ENV_PYTHON, REPO_ROOT, SPARK_SUBMIT
from flywheel.spark import spark_env

CFG = load_config()
EXAMPLES = f"{CFG.hdfs_uri}{CFG.joiner.examples_dir}"
TRAINING = f"{CFG.hdfs_uri}{CFG.batch.training_dir}"
PARAMS = ("{{ params.date or data_interval_start | ds }}", "{{ params.mode }}", "{{ params.epochs }}",
          "{{ params.train_days }}", "{{ params.force_publish }}")


@dag(
    dag_id="daily_retrain",
    schedule=CFG.batch.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["flywheel", "batch", "training"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(hours=3)},
    dagrun_timeout=timedelta(hours=6),
    params={
        "date": Param("", type="string", title="Evaluation day",
                      description="YYYY-MM-DD; empty: the run's data interval start (yesterday for a scheduled run)",
                      pattern=r"^(\d{4}-\d{2}-\d{2})?$"),
        "mode": Param("warm", enum=["warm", "scratch"], title="Start from",
                      description="warm: the newest training-PS snapshot; scratch: empty tables"),
        "epochs": Param(CFG.batch.epochs, type="integer", minimum=1, maximum=100, title="Epochs"),
        "train_days": Param(CFG.batch.train_days, type="integer", minimum=1, maximum=90, title="Training days",
                            description="days before the evaluation day that train"),
        "force_publish": Param(False, type="boolean", title="Force publish",
                               description="move the champion alias even if the champion evaluates better"),
    },
)
def daily_retrain():
    # missing data is rarely transient: one quick retry (HDFS restarting), then a clear failure
    @task.external_python(python=ML_ENV_PYTHON, expect_airflow=False, retries=1, retry_delay=timedelta(seconds=15))
    def plan(date: str, mode: str, epochs: str, train_days: str, force: str) -> dict:
        """The days to sample and train on; fails when they have no landed examples."""
        from dataclasses import asdict

        from flywheel.config import load_config
        from pipelines.batch.retrain import RetrainParams, plan

        params = RetrainParams(date=date, mode=mode, epochs=int(epochs), train_days=int(train_days),
                               force_publish=force == "True")
        return {**plan(load_config(), params), "params": asdict(params)}

    @task.external_python(python=ML_ENV_PYTHON, expect_airflow=False)
    def train(planned: dict, run_id: str) -> dict:
        """Train, evaluate, log to MLflow and register a version (or reuse an identical run)."""
        import logging

        from flywheel.config import load_config
        from pipelines.batch.retrain import RetrainParams, train

        logging.basicConfig(level=logging.INFO)
        return train(load_config(), RetrainParams(**planned["params"]), tags={"airflow_run_id": run_id})

    @task.external_python(python=ML_ENV_PYTHON, expect_airflow=False)
    def publish(candidate: dict, planned: dict) -> dict:
        """Gate against the champion; hand the snapshot to the training PS; move the alias."""
        import logging

        from flywheel.config import load_config
        from pipelines.batch.publish import publish

        logging.basicConfig(level=logging.INFO)
        return publish(load_config(), candidate, force=planned["params"]["force_publish"])

    planned = plan(*PARAMS)
    sampled = SparkSubmitOperator(
        task_id="negative_sampling",
        application=str(REPO_ROOT / "pipelines" / "batch" / "negative_sampling.py"),
        conn_id="spark_default",
        spark_binary=str(SPARK_SUBMIT),
        name="flywheel-negative-sampling",
        driver_memory=CFG.spark.driver_memory,
        conf={"spark.driver.host": CFG.stack.host, "spark.driver.bindAddress": CFG.stack.host,
              "spark.ui.enabled": "false", "spark.log.level": "WARN", "spark.sql.shuffle.partitions": "4"},
        env_vars=spark_env(CFG),  # HADOOP_CONF_DIR, SPARK_LOCAL_IP, PYSPARK_PYTHON, PYTHONPATH
        application_args=[
            "--examples", EXAMPLES, "--output", TRAINING,
            "--dates", "{{ ti.xcom_pull(task_ids='plan')['dates'] }}",
            "--rates", ",".join(f"{t}={r}" for t, r in CFG.batch.negative_rates.items()),
            "--default-rate", str(CFG.batch.negative_rate),
            "--retrieval-negatives", str(CFG.batch.retrieval_negatives),
        ],
        inlets=[Asset(EXAMPLES)],
        outlets=[Asset(TRAINING)],
    )
    candidate = train(planned, run_id="{{ run_id }}")
    planned >> sampled >> candidate
    publish(candidate, planned)


daily_retrain()
