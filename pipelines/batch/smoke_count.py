"""Smoke check of the batch path: rows written to HDFS over WebHDFS, counted by Spark over hdfs://.

The ``stack_smoke`` DAG calls :func:`write_rows` and :func:`log_run` in the ML environment,
then submits this file to Spark; :func:`main` fails unless the partition holds exactly the
expected number of rows.

Example::

    HADOOP_CONF_DIR=.flywheel/hdfs/conf SPARK_CONF_DIR=.flywheel/spark/conf .venv/ml/bin/spark-submit --master 'local[2]' \\
        pipelines/batch/smoke_count.py --path hdfs://127.0.0.1:8020/flywheel/smoke/airflow/x --expect 100
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import TYPE_CHECKING
from flywheel.secrets import tracking_uri

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from flywheel.config import FlywheelConfig

EXPERIMENT = "flywheel-smoke"
RUN_TAG = "airflow_run_id"
SCHEMA = "i LONG, run_id STRING"


def partition_dir(cfg: FlywheelConfig, run_id: str) -> str:
    """HDFS folder of one DAG run's rows: ``<hdfs.root>/smoke/airflow/<run id>``.

    Hadoop paths may not hold ``:`` (Airflow run ids do), so every character outside
    ``[A-Za-z0-9._=-]`` becomes ``_``.
    """
    safe = re.sub(r"[^A-Za-z0-9._=-]", "_", run_id)
    return f"{cfg.hdfs.root.rstrip('/')}/smoke/airflow/{safe}"


def write_rows(cfg: FlywheelConfig, run_id: str, rows: int) -> str:
    """Replace the run's partition with ``rows`` JSON lines; idempotent per run id.

    Args:
      cfg: the stack's config (WebHDFS address, HDFS root).
      run_id: the Airflow run id that owns the partition.
      rows: how many lines to write (>= 0).

    Returns:
      The partition's ``hdfs://`` URI, for Spark.
    """
    from flywheel.hdfs import webhdfs

    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    fs, folder = webhdfs(cfg), partition_dir(cfg, run_id)
    if fs.exists(folder):
        fs.rm(folder, recursive=True)
    fs.makedirs(folder, exist_ok=True)
    body = "".join(json.dumps({"i": i, "run_id": run_id}) + "\n" for i in range(rows))
    fs.pipe_file(f"{folder}/part-00000.jsonl", body.encode())
    return f"{cfg.hdfs_uri}{folder}"


def log_run(cfg: FlywheelConfig, run_id: str, rows: int, uri: str) -> str:
    """Log (or, on a retry, update) the MLflow run of this DAG run; return its MLflow run id.

    Records param ``rows``, metric ``rows_written`` (rows) and tags ``airflow_run_id`` and
    ``partition`` in experiment ``flywheel-smoke`` on the stack's tracking server.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(cfg))
    experiment = mlflow.set_experiment(EXPERIMENT)
    earlier = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"tags.{RUN_TAG} = '{run_id}'",
        output_format="list",
    )
    resume = earlier[0].info.run_id if earlier else None
    with mlflow.start_run(run_id=resume, run_name=None if resume else run_id) as run:
        mlflow.set_tags({RUN_TAG: run_id, "partition": uri})
        mlflow.log_param("rows", rows)
        mlflow.log_metric("rows_written", rows)
        return run.info.run_id


def count_rows(spark: SparkSession, path: str) -> int:
    """Rows of the JSON-lines partition at ``path`` (an ``hdfs://`` URI)."""
    return spark.read.schema(SCHEMA).json(path).count()


def main(argv: list[str] | None = None) -> int:
    """Count the partition's rows with Spark; exit 1 unless they equal ``--expect``.

    The driver binds to ``SPARK_LOCAL_IP`` (default 127.0.0.1) and starts no UI, so nothing
    listens beyond the stack host.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True,
                        help="partition folder, e.g. hdfs://127.0.0.1:8020/flywheel/smoke/airflow/<run>")
    parser.add_argument("--expect", required=True, type=int, help="rows the partition must hold")
    args = parser.parse_args(argv)

    from pyspark.errors import AnalysisException
    from pyspark.sql import SparkSession

    host = os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")
    spark = (
        SparkSession.builder.appName("flywheel-smoke-count")
        .config("spark.driver.host", host)
        .config("spark.driver.bindAddress", host)
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        found = count_rows(spark, args.path)
    except AnalysisException as exc:
        print(f"smoke_count: cannot read {args.path}: {exc}. Did the write_partition task run, "
              "and are HADOOP_CONF_DIR and SPARK_CONF_DIR the stack's hdfs/conf and spark/conf "
              "(flywheel.spark.spark_env; the second holds HDFS's Kerberos login)?", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    if found != args.expect:
        print(f"smoke_count: {args.path} holds {found} rows, expected {args.expect}: "
              "the WebHDFS write and the hdfs:// read disagree; inspect the partition with "
              "`hdfs dfs -ls` or flywheel.hdfs.webhdfs", file=sys.stderr)
        return 1
    print(f"smoke_count: {args.path} holds {found} rows, as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
