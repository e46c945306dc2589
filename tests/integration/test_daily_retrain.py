"""The daily retrain on the real stack: landed partitions on HDFS -> `daily_retrain` triggered
over Airflow's REST API with params -> Spark sampling, training, MLflow run, model version,
`champion` alias, snapshot lineage; the serving-side loader follows the alias; re-running a
date is idempotent; a date with no data fails with a clear message.

Dates are in 2031 so they never meet other tests' (or live) partitions.
"""

from datetime import date

import pytest
from mlflow import MlflowClient

from flywheel.airflow_client import AirflowClient, AirflowRunFailed
from flywheel.hdfs import webhdfs
from models.sparse import LocalTables
from datasets.movielens_sample import write_movielens
from pipelines.batch.backfill import backfill
from pipelines.batch.datasets import parquet_files
from pipelines.batch.publish import champion, publish
from pipelines.batch.retrain import tables_for
from paramserver.snapshots import COMPLETE
from serving.loader import ChampionLoader
from flywheel.secrets import tracking_uri
from tests.integration.loop_stack import EPOCHS, EVAL_DAY

pytestmark = pytest.mark.integration

DAG_ID = "daily_retrain"
CONF = {"date": EVAL_DAY, "mode": "scratch", "epochs": EPOCHS, "train_days": 3, "force_publish": True}


@pytest.fixture(scope="module")
def airflow(stack) -> AirflowClient:
    return AirflowClient.from_config(stack)  # run_dag waits for the DAG to be parsed and unpauses it


@pytest.fixture(scope="module")
def landed(stack, tmp_path_factory):
    folder = write_movielens(tmp_path_factory.mktemp("ml"), users=120, items=60, ratings_per_user=25, days=4)
    return backfill(stack, str(folder), end_date=date.fromisoformat(EVAL_DAY), days=4, negatives=2)


def runs_of(stack, day: str):
    client = MlflowClient(tracking_uri(stack))
    experiment = client.get_experiment_by_name(stack.batch.experiment)
    return client.search_runs([experiment.experiment_id], f"tags.date = '{day}'",
                              order_by=["attributes.start_time DESC"]) if experiment else []


def test_daily_retrain_trains_logs_publishes_and_serving_follows(stack, airflow, landed):
    assert set(landed) == {"2031-03-02", "2031-03-03", "2031-03-04", "2031-03-05"}
    loader = ChampionLoader(stack, source=LocalTables(tables_for(stack)))
    loader.poll()
    before = loader.current.version if loader.current else None

    run = airflow.run_dag(DAG_ID, conf=CONF, timeout_s=1200)
    states = {ti["task_id"]: ti["state"] for ti in airflow.task_instances(DAG_ID, run["dag_run_id"])}
    assert states == dict.fromkeys(["plan", "negative_sampling", "train", "publish"], "success"), states

    # the training set: every day replaced by Spark, each row with its per-task rates
    fs = webhdfs(stack)
    for day in landed:
        assert parquet_files(fs, f"{stack.batch.training_dir}/dt={day}"), day
    # MLflow: the run with params, metric curves, evaluation, plot, bundle, lineage
    # the newest run of the date (on a reused test stack, an identical earlier run is reused)
    mlrun = runs_of(stack, EVAL_DAY)[0]
    client = MlflowClient(tracking_uri(stack))
    m = mlrun.data.metrics
    # plumbing, not model quality (tests/unit and the ml-100k figures cover learning)
    assert 0 <= m["auc_click"] <= 1 and 0 <= m["recall_at_50"] <= 1 and m["eval_examples"] > 0
    # the baselines measured beside it on the same day: popularity (AUC and top-K) and EASE
    assert 0 <= m["popularity_auc_click"] <= 1 and 0 <= m["popularity_recall_at_50"] <= 1
    assert 0 <= m["ease_recall_at_50"] <= 1 and 0 <= m["recall_at_50_raw"] <= 1
    assert m["eval_users_cold"] + m["eval_users_warm"] == m["eval_users"] > 0
    assert len(client.get_metric_history(mlrun.info.run_id, "loss_ranker")) >= 2
    assert mlrun.data.params["train_dates"] == "2031-03-02,2031-03-03,2031-03-04"
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id, "bundle")}
    assert {"bundle/meta.json", "bundle/ranker.npz", "bundle/retriever.npz", "bundle/paths.npy"} <= artifacts
    assert client.list_artifacts(mlrun.info.run_id, "plots")
    tags = mlrun.data.tags
    assert tags["airflow_run_id"].startswith("manual__") and tags["gate"] == "published"
    assert fs.exists(f"{stack.paramserver.snapshot_dir}/{tags['snapshot_id']}/{COMPLETE}")
    # the registered version, the champion alias and its lineage
    current = champion(stack)
    assert current.version == tags["model_version"] and current.run_id == mlrun.info.run_id
    assert current.tags["snapshot_id"] == tags["snapshot_id"] and current.tags["date"] == EVAL_DAY
    # the serving-side loader picks the new dense weights up
    swapped = loader.poll()
    assert loader.current.version == current.version
    assert swapped or before == current.version  # a fresh stack: swapped; a reused one may have it already
    assert loader.current.meta["snapshot"]["id"] == tags["snapshot_id"]
    scores = loader.current.ranker.score([{"sparse": {"user": [1], "item": [3]}, "position": 0}])
    assert set(scores) == {"click", "like", "finish"}
    assert not loader.poll()  # nothing new: nothing reloaded

    # re-running the date: the same data is sampled again, the finished run is reused
    runs = len(runs_of(stack, EVAL_DAY))
    again = airflow.run_dag(DAG_ID, conf=CONF, timeout_s=1200)
    assert again["state"] == "success"
    assert len(runs_of(stack, EVAL_DAY)) == runs
    assert champion(stack).version == current.version


def test_the_gate_keeps_the_champion_when_a_candidate_is_below_popularity(stack, landed):
    """A candidate run whose gate metric is below the popularity baseline measured in it is not
    published, the champion stays, and the run says why (the run is a real MLflow run; its
    figures are set so that popularity wins)."""
    import mlflow

    current = champion(stack)
    assert current is not None, "the retrain test publishes a champion first"
    mlflow.set_tracking_uri(tracking_uri(stack))
    mlflow.set_experiment(stack.batch.experiment)
    metrics = {"auc_click": 0.55, "popularity_auc_click": 0.61}
    with mlflow.start_run(run_name="below popularity") as run:
        mlflow.log_metrics(metrics)
    out = publish(stack, {"date": EVAL_DAY, "run_id": run.info.run_id, "version": "999999", "metrics": metrics,
                          "train_dates": []})
    assert not out["published"] and "candidate 0.5500 <= popularity 0.6100" in out["reason"], out
    assert champion(stack).version == current.version
    logged = MlflowClient(tracking_uri(stack)).get_run(run.info.run_id).data
    assert logged.tags["gate"] == "kept champion" and "does not beat the most popular" in logged.tags["gate_reason"]
    assert logged.metrics["gate_popularity_auc_click"] == pytest.approx(0.61)


def test_a_date_without_data_fails_clearly(stack, airflow):
    with pytest.raises(AirflowRunFailed) as failed:
        airflow.run_dag(DAG_ID, conf={**CONF, "date": "2031-09-01"}, timeout_s=600)
    assert "no landed examples for the evaluation day 2031-09-01" in str(failed.value)
    assert "backfill" in str(failed.value)
