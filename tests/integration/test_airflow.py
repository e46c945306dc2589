"""The real Airflow: the `stack_smoke` DAG triggered over the REST API crosses HDFS, Spark and MLflow."""

import json
import os
import subprocess
import uuid

import pytest
from mlflow import MlflowClient

from flywheel.airflow_client import AirflowClient, AirflowError
from flywheel.hdfs import webhdfs
from flywheel.paths import ML_PYTHON, REPO_ROOT, VENV
from flywheel.spark import spark_env
from pipelines.batch.smoke_count import EXPERIMENT, RUN_TAG, log_run, partition_dir, write_rows
from flywheel.secrets import tracking_uri

pytestmark = pytest.mark.integration

DAG_ID = "stack_smoke"


@pytest.fixture(scope="module")
def airflow(stack) -> AirflowClient:
    client = AirflowClient.from_config(stack)
    client.wait_for_dag(DAG_ID, timeout_s=120)
    client.unpause(DAG_ID)
    return client


def test_stack_smoke_writes_hdfs_counts_with_spark_and_logs_mlflow(stack, airflow):
    run = airflow.run_dag(DAG_ID, conf={"rows": 37}, timeout_s=600)
    run_id = run["dag_run_id"]
    assert run["conf"] == {"rows": 37}
    states = {ti["task_id"]: ti["state"] for ti in airflow.task_instances(DAG_ID, run_id)}
    assert states == {"write_partition": "success", "spark_count": "success"}

    fs, folder = webhdfs(stack), partition_dir(stack, run_id)
    files = [p for p in fs.ls(folder, detail=False) if not p.rsplit("/", 1)[-1].startswith(("_", "."))]
    records = [json.loads(line) for p in files for line in fs.cat_file(p).decode().splitlines()]
    assert sorted(r["i"] for r in records) == list(range(37))
    assert {r["run_id"] for r in records} == {run_id}

    mlflow = MlflowClient(tracking_uri(stack))
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"no MLflow experiment {EXPERIMENT!r} at {stack.mlflow_url}"
    runs = mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.{RUN_TAG} = '{run_id}'")
    assert len(runs) == 1, f"expected one MLflow run tagged {RUN_TAG}={run_id}, found {len(runs)}"
    assert runs[0].data.params["rows"] == "37"
    assert runs[0].data.metrics["rows_written"] == 37
    assert runs[0].info.status == "FINISHED"


def test_trigger_with_wrong_param_type_is_refused_with_400(airflow):
    before = airflow.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 1}).json()["total_entries"]
    with pytest.raises(AirflowError) as refused:
        airflow.trigger(DAG_ID, conf={"rows": "abc"})
    assert refused.value.status == 400, str(refused.value)
    assert "rows" in str(refused.value)
    after = airflow.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 1}).json()["total_entries"]
    assert after == before, "a refused trigger must not create a DAG run"


def test_spark_count_fails_when_the_partition_holds_other_rows(stack):
    uri = write_rows(stack, f"it-mismatch-{uuid.uuid4().hex[:8]}", 5)
    proc = subprocess.run(
        [str(VENV / "ml" / "bin" / "spark-submit"), "--master", stack.spark.master,
         "--conf", "spark.ui.enabled=false", "--conf", "spark.log.level=WARN",
         str(REPO_ROOT / "pipelines" / "batch" / "smoke_count.py"), "--path", uri, "--expect", "6"],
        env={**os.environ, **spark_env(stack), "PYSPARK_PYTHON": str(ML_PYTHON)},
        capture_output=True, text=True, timeout=300,
    )
    output = proc.stdout + proc.stderr  # spark-submit merges the Python driver's stderr into stdout
    assert proc.returncode != 0, output[-3000:]
    assert f"{uri} holds 5 rows, expected 6" in output, output[-3000:]


def test_write_partition_and_mlflow_run_are_idempotent_per_dag_run(stack):
    run_id = f"it-retry-{uuid.uuid4().hex[:8]}"
    for _ in range(2):  # a task retry or a cleared run repeats both steps with the same run id
        uri = write_rows(stack, run_id, 7)
        mlflow_run = log_run(stack, run_id, 7, uri)
    fs = webhdfs(stack)
    lines = [line for p in fs.ls(partition_dir(stack, run_id), detail=False) for line in fs.cat_file(p).splitlines()]
    assert len(lines) == 7
    mlflow = MlflowClient(tracking_uri(stack))
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    runs = mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.{RUN_TAG} = '{run_id}'")
    assert [r.info.run_id for r in runs] == [mlflow_run]


def test_airflow_refuses_requests_without_the_login(stack, airflow):
    """Only the configured users get in: no token, a forged token or a wrong password gets 401."""
    import requests

    from flywheel.stack.airflow import admin_credentials

    url = f"{stack.airflow_url}/api/v2/dags"
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer forged"}, timeout=30).status_code in (401, 403)
    user, password = admin_credentials(stack)
    assert requests.post(f"{stack.airflow_url}/auth/token", json={"username": user, "password": password + "x"},
                         timeout=30).status_code == 401
    assert requests.post(f"{stack.airflow_url}/auth/token", json={"username": "admin2", "password": password},
                         timeout=30).status_code == 401
    assert airflow.request("GET", "/api/v2/dags", params={"limit": 1}).status_code == 200
