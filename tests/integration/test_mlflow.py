"""The real MLflow server: runs, artifacts, registered models and aliases."""

import uuid

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.integration


class _Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input * 2


def test_log_run_register_alias_and_load_by_alias(stack):
    mlflow.set_tracking_uri(stack.mlflow_url)
    name = f"it-model-{uuid.uuid4().hex[:6]}"
    mlflow.set_experiment("integration-tests")
    with mlflow.start_run() as run:
        mlflow.log_param("dim", 16)
        mlflow.log_metric("auc", 0.75)
        info = mlflow.pyfunc.log_model(name="model", python_model=_Doubler(),
                                       pip_requirements=["mlflow"], registered_model_name=name)
    client = MlflowClient(stack.mlflow_url)
    fetched = client.get_run(run.info.run_id)
    assert fetched.data.params["dim"] == "16"
    assert fetched.data.metrics["auc"] == 0.75

    version = info.registered_model_version
    client.set_registered_model_alias(name, "champion", version)
    assert client.get_model_version_by_alias(name, "champion").version == str(version)

    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    out = model.predict(pd.DataFrame({"x": [1, 2, 3]}))
    assert out["x"].tolist() == [2, 4, 6]
