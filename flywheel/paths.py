"""Where the project's environments and fetched artifacts live (no third-party imports:
DAG files in the Airflow environment import this)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV = REPO_ROOT / ".venv"
ML_PYTHON = VENV / "ml" / "bin" / "python"
FLINK_PYTHON = VENV / "flink" / "bin" / "python"
AIRFLOW_BIN = VENV / "airflow" / "bin" / "airflow"
JVM_DIR = REPO_ROOT / "build" / "jvm"
