"""Where the project's environments and fetched artifacts live (no third-party imports:
DAG files in the Airflow environment import this)."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV = REPO_ROOT / ".venv"
ML_PYTHON = VENV / "ml" / "bin" / "python"
ML_ENV_PYTHON = os.environ.get("FLYWHEEL_ML_PYTHON", str(ML_PYTHON))  # what DAG tasks run in (external_python)
SPARK_SUBMIT = VENV / "ml" / "bin" / "spark-submit"
FLINK_PYTHON = VENV / "flink" / "bin" / "python"
AIRFLOW_BIN = VENV / "airflow" / "bin" / "airflow"
JVM_DIR = REPO_ROOT / "build" / "jvm"
