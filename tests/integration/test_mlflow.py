"""The real MLflow server: runs, artifacts, registered models and aliases."""

import uuid

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from flywheel.secrets import tracking_uri

pytestmark = pytest.mark.integration


class _Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input * 2


def test_log_run_register_alias_and_load_by_alias(stack):
    mlflow.set_tracking_uri(tracking_uri(stack))
    name = f"it-model-{uuid.uuid4().hex[:6]}"
    mlflow.set_experiment("integration-tests")
    with mlflow.start_run() as run:
        mlflow.log_param("dim", 16)
        mlflow.log_metric("auc", 0.75)
        info = mlflow.pyfunc.log_model(name="model", python_model=_Doubler(),
                                       pip_requirements=["mlflow"], registered_model_name=name)
    client = MlflowClient(tracking_uri(stack))
    fetched = client.get_run(run.info.run_id)
    assert fetched.data.params["dim"] == "16"
    assert fetched.data.metrics["auc"] == 0.75

    version = info.registered_model_version
    client.set_registered_model_alias(name, "champion", version)
    assert client.get_model_version_by_alias(name, "champion").version == str(version)

    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    out = model.predict(pd.DataFrame({"x": [1, 2, 3]}))
    assert out["x"].tolist() == [2, 4, 6]


def test_mlflow_refuses_requests_without_the_login(stack):
    """Basic auth is on: no login or a wrong password gets 401; /health stays open for probes."""
    import requests

    from flywheel.secrets import mlflow_login

    api = f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search"
    user, password = mlflow_login(stack)
    assert requests.get(api, params={"max_results": 1}, timeout=30).status_code == 401
    assert requests.get(api, params={"max_results": 1}, auth=(user, password + "x"), timeout=30).status_code == 401
    assert requests.get(f"{stack.mlflow_url}/graphql", timeout=30).status_code in (401, 405)
    assert requests.get(api, params={"max_results": 1}, auth=(user, password), timeout=30).status_code == 200
    assert requests.get(f"{stack.mlflow_url}/health", timeout=30).status_code == 200
