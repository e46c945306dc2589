"""MLflow tracking server: SQLite backend and a local artifact root by default, proxied artifacts."""

from __future__ import annotations

import requests

from flywheel.config import FlywheelConfig
from flywheel.stack.base import VENV, Program, Service, require


def service(cfg: FlywheelConfig) -> Service:
    home = cfg.stack.root / "mlflow"
    mlflow_bin = VENV / "ml" / "bin" / "mlflow"

    def prepare() -> None:
        require(mlflow_bin, "mlflow (the .venv/ml environment)")
        home.mkdir(parents=True, exist_ok=True)
        cfg.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)

    def healthy() -> bool:
        try:
            return requests.get(f"{cfg.mlflow_url}/health", timeout=2).ok
        except requests.RequestException:
            return False

    command = [
        str(mlflow_bin), "server",
        "--host", cfg.stack.bind, "--port", str(cfg.mlflow.port),
        "--backend-store-uri", cfg.mlflow_backend_uri,
        "--artifacts-destination", str(cfg.mlflow_artifacts_dir),
        "--workers", str(cfg.mlflow.workers),
    ]
    return Service(
        name="mlflow",
        url=cfg.mlflow_url,
        # The job runner (7 consumers, ~1.6 GB) is not used by Flywheel.
        programs=[Program("mlflow", command, env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})],
        prepare=prepare,
        healthy=healthy,
        ports=[cfg.mlflow.port],
    )
