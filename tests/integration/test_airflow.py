"""The real Airflow: the `stack_smoke` DAG triggered over the REST API crosses HDFS, Spark and MLflow."""

import json

import pytest
from mlflow import MlflowClient

from flywheel.airflow_client import AirflowClient, AirflowError
from flywheel.hdfs import webhdfs
from pipelines.batch.smoke_count import EXPERIMENT, RUN_TAG, partition_dir

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

    mlflow = MlflowClient(stack.mlflow_url)
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
