"""Spark in local mode from the ML environment, talking to the stack's HDFS natively (hdfs://)."""

from __future__ import annotations

import os

from flywheel.config import FlywheelConfig
from flywheel.paths import ML_PYTHON, REPO_ROOT
from flywheel.stack.hdfs import conf_dir, spark_conf_dir


def spark_env(cfg: FlywheelConfig) -> dict[str, str]:
    """Environment a Spark driver needs: the stack's HADOOP_CONF_DIR (else replication 3), its
    SPARK_CONF_DIR (the Kerberos login of a secure HDFS, rendered by the hdfs service), and
    Python workers in the ML environment with the repository importable."""
    return {"HADOOP_CONF_DIR": str(conf_dir(cfg)), "SPARK_CONF_DIR": str(spark_conf_dir(cfg)),
            "SPARK_LOCAL_IP": cfg.stack.host, "PYSPARK_PYTHON": str(ML_PYTHON), "PYTHONPATH": str(REPO_ROOT)}


def spark_session(cfg: FlywheelConfig, app_name: str):
    """A local SparkSession bound to the stack host, with HDFS as its default filesystem.

    Example::

        spark = spark_session(cfg, "count")
        spark.read.text(f"{cfg.hdfs_uri}/flywheel/x").count()
    """
    os.environ.update(spark_env(cfg))
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.appName(app_name)
        .master(cfg.spark.master)
        .config("spark.driver.memory", cfg.spark.driver_memory)
        .config("spark.driver.host", cfg.stack.host)
        .config("spark.driver.bindAddress", cfg.stack.host)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.hadoop.fs.defaultFS", cfg.hdfs_uri)
        .getOrCreate()
    )
