"""Airflow 3: api-server, scheduler and dag-processor as separate programs (not `standalone`,
which binds 0.0.0.0), SQLite + LocalExecutor, the repository's dags/ as DAG folder.

Secrets (admin password, JWT secret, API secret key) are generated on first start into the
state dir and never committed; `make status` prints the admin password.
"""

from __future__ import annotations

import json
import os
import secrets

from flywheel.config import REPO_ROOT, FlywheelConfig
from flywheel.stack.base import AIRFLOW_BIN, ML_PYTHON, Program, Service, http_json, require, run_once, write


def home(cfg: FlywheelConfig):
    return cfg.stack.root / "airflow"


def _secret(cfg: FlywheelConfig, name: str) -> str:
    path = home(cfg) / "secrets" / name
    if not path.exists():
        write(path, secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def users(cfg: FlywheelConfig) -> dict[str, str]:
    """Every Airflow login and its role: ``airflow.admin_user`` (admin) and ``airflow.users``.
    Nobody else gets in; there is no default password."""
    return {**cfg.airflow.users, cfg.airflow.admin_user: "admin"}


def passwords(cfg: FlywheelConfig) -> dict[str, str]:
    """user -> password of every login in :func:`users`, from the state dir's passwords.json
    (mode 0600); a user without one gets a generated password."""
    path = home(cfg) / "passwords.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    wanted = {u: known.get(u) or secrets.token_urlsafe(12) for u in users(cfg)}
    if wanted != known:
        write(path, json.dumps(wanted))
        path.chmod(0o600)
    return wanted


def admin_credentials(cfg: FlywheelConfig) -> tuple[str, str]:
    """(user, password) of the Airflow admin."""
    return cfg.airflow.admin_user, passwords(cfg)[cfg.airflow.admin_user]


def airflow_cfg(cfg: FlywheelConfig) -> str:
    a = cfg.airflow
    dags = a.dags_dir if a.dags_dir.is_absolute() else REPO_ROOT / a.dags_dir
    base_url = cfg.airflow_url
    return f"""\
# Rendered by flywheel.stack.airflow from config/flywheel.yaml; edits here are overwritten.
[core]
dags_folder = {dags}
executor = LocalExecutor
parallelism = {a.parallelism}
max_active_tasks_per_dag = {a.max_active_tasks_per_dag}
load_examples = False
dags_are_paused_at_creation = True
simple_auth_manager_users = {','.join(f'{u}:{role}' for u, role in users(cfg).items())}
simple_auth_manager_passwords_file = {home(cfg) / 'passwords.json'}
execution_api_server_url = {base_url}/execution/

[database]
sql_alchemy_conn = sqlite:///{home(cfg) / 'airflow.db'}

[api]
host = {cfg.stack.bind}
port = {a.port}
base_url = {base_url}
workers = 1
secret_key = {_secret(cfg, 'api_secret_key')}

[api_auth]
jwt_secret = {_secret(cfg, 'jwt_secret')}

[logging]
base_log_folder = {cfg.stack.logs / 'airflow'}

[dag_processor]
refresh_interval = 30

[scheduler]
enable_health_check = False
"""


def environment(cfg: FlywheelConfig) -> dict[str, str]:
    env = {
        "AIRFLOW_HOME": str(home(cfg)),
        "AIRFLOW_CONFIG": str(home(cfg) / "airflow.cfg"),
        "PYTHONPATH": str(REPO_ROOT),
        "FLYWHEEL_ML_PYTHON": str(ML_PYTHON),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": cfg.spark.master}),
    }
    for key, value in os.environ.items():
        if key == "FLYWHEEL_CONFIG" or key.startswith("FLYWHEEL__"):
            env[key] = value
    return env


def service(cfg: FlywheelConfig) -> Service:
    env = environment(cfg)
    airflow = str(AIRFLOW_BIN)

    def prepare() -> None:
        require(AIRFLOW_BIN, "airflow (the .venv/airflow environment)")
        passwords(cfg)
        write(home(cfg) / "airflow.cfg", airflow_cfg(cfg))
        run_once([airflow, "db", "migrate"], "airflow db migrate", env={**os.environ, **env}, timeout=600)

    def healthy() -> bool:
        health = http_json(f"{cfg.airflow_url}/api/v2/monitor/health")
        if not health:
            return False
        return all(health.get(part, {}).get("status") == "healthy"
                   for part in ("metadatabase", "scheduler", "dag_processor"))

    return Service(
        name="airflow",
        url=cfg.airflow_url,
        programs=[
            Program("airflow-api-server", [airflow, "api-server", "--host", cfg.stack.bind,
                                           "--port", str(cfg.airflow.port), "--workers", "1"], env=env),
            # The scheduler's log server would bind 0.0.0.0:8793; LocalExecutor logs are read
            # from disk by the api-server anyway.
            Program("airflow-scheduler", [airflow, "scheduler", "--skip-serve-logs"], env=env),
            Program("airflow-dag-processor", [airflow, "dag-processor"], env=env),
        ],
        prepare=prepare,
        healthy=healthy,
        ports=[cfg.airflow.port],
    )
