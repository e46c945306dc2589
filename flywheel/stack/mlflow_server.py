"""MLflow tracking server: SQLite backend and a local artifact root by default, proxied artifacts,
MLflow's basic auth on (every request but ``/health`` needs the login of ``mlflow.admin_user``;
see flywheel/secrets.py for where the password comes from).

The admin user is created with the password at the server's first start, in the auth database
(``<root>/mlflow/auth.db``); a later change of the password secret does not reach that user:
change it with MLflow's update-password API (or delete auth.db) as well."""

from __future__ import annotations

import requests

from flywheel import secrets
from flywheel.config import FlywheelConfig
from flywheel.stack.base import VENV, Program, Service, require, write


def service(cfg: FlywheelConfig) -> Service:
    home = cfg.stack.root / "mlflow"
    mlflow_bin = VENV / "ml" / "bin" / "mlflow"

    def prepare() -> None:
        require(mlflow_bin, "mlflow (the .venv/ml environment)")
        home.mkdir(parents=True, exist_ok=True)
        cfg.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
        write(home / "basic_auth.ini", auth_ini(cfg)).chmod(0o600)

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
        "--app-name", "basic-auth",
    ]
    return Service(
        name="mlflow",
        url=cfg.mlflow_url,
        programs=[Program("mlflow", command, env=server_env(cfg))],
        prepare=prepare,
        healthy=healthy,
        ports=[cfg.mlflow.port],
    )


def auth_ini(cfg: FlywheelConfig) -> str:
    """MLflow's auth configuration (MLFLOW_AUTH_CONFIG_PATH); the admin's password is not in it
    but in the server's environment (MLFLOW_AUTH_ADMIN_PASSWORD)."""
    return f"""\
# Rendered by flywheel.stack.mlflow_server; edits here are overwritten.
[mlflow]
default_permission = {cfg.mlflow.default_permission}
database_uri = sqlite:///{cfg.stack.root / 'mlflow' / 'auth.db'}
admin_username = {cfg.mlflow.admin_user}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
"""


def server_env(cfg: FlywheelConfig) -> dict[str, str]:
    return {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # the job runner (7 consumers, ~1.6 GB) is unused
        "MLFLOW_AUTH_CONFIG_PATH": str(cfg.stack.root / "mlflow" / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": cfg.mlflow.admin_user,
        "MLFLOW_AUTH_ADMIN_PASSWORD": secrets.value(cfg, secrets.MLFLOW_PASSWORD),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.value(cfg, secrets.MLFLOW_SECRET_KEY),
    }
