"""A small client for the REST API (v2) of the stack's Airflow 3: parse, unpause, trigger, wait.

It logs in as the stack's admin (``POST /auth/token``, SimpleAuthManager) and, when a run
fails or times out, puts each task's state and the tail of the failed tasks' logs into the
error, so a red test says why without a trip to the UI.

Example::

    from flywheel.airflow_client import AirflowClient
    from flywheel.config import load_config

    client = AirflowClient.from_config(load_config())
    run = client.run_dag("stack_smoke", conf={"rows": 100})  # raises AirflowRunFailed on failure
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import requests
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from flywheel.config import FlywheelConfig

TERMINAL_STATES = ("success", "failed")


class AirflowError(RuntimeError):
    """The Airflow API refused a request or could not be reached.

    Attributes:
      status: the HTTP status code, or None when no answer came.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AirflowRunFailed(AirflowError):
    """A DAG run ended failed or did not end in time; the message holds task states and logs."""


def _q(part: str) -> str:
    return quote(part, safe="")


def _format_error(detail: Any) -> list[str]:
    """Airflow's structured exception (a list of dicts) as ``type: value (file:line in name)``."""
    if not detail:
        return []
    if not isinstance(detail, list):
        return str(detail).splitlines()
    out = []
    for exc in detail:
        if not isinstance(exc, dict):
            out.append(str(exc))
            continue
        frames = exc.get("frames") or [{}]
        where = frames[-1]
        out.append(f"  {exc.get('exc_type')}: {exc.get('exc_value')} "
                   f"({where.get('filename')}:{where.get('lineno')} in {where.get('name')})")
    return out


class AirflowClient:
    """Talks to one Airflow api-server as one user; the bearer token is fetched lazily.

    Args:
      base_url: e.g. ``http://127.0.0.1:8080``.
      username: a SimpleAuthManager user.
      password: its password.
      timeout_s: per-request timeout, seconds.
    """

    def __init__(self, base_url: str, username: str, password: str, timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.timeout_s = timeout_s
        self._token: str | None = None
        self._session = requests.Session()

    @classmethod
    def from_config(cls, cfg: FlywheelConfig) -> AirflowClient:
        """A client for the stack described by ``cfg``, logged in as its admin."""
        from flywheel.stack.airflow import admin_credentials

        user, password = admin_credentials(cfg)
        return cls(cfg.airflow_url, user, password)

    # -- transport ---------------------------------------------------------------------------
    # Only connection failures are retried: a read timeout on a POST may already have started a run.
    @retry(retry=retry_if_exception_type(requests.ConnectionError),
           stop=stop_after_attempt(4), wait=wait_exponential(multiplier=0.5, max=5), reraise=True)
    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self._session.request(method, self.base_url + path, timeout=self.timeout_s, **kwargs)

    def _login(self) -> str:
        resp = self._send("POST", "/auth/token", json={"username": self.username, "password": self._password})
        if resp.status_code not in (200, 201):
            raise AirflowError(
                f"Airflow at {self.base_url} refused the login of {self.username!r} "
                f"(HTTP {resp.status_code}: {resp.text[:300]}); check the password in the state "
                "dir's airflow/passwords.json (`flywheel status` prints it)", resp.status_code)
        return resp.json()["access_token"]

    def request(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        """Send an authenticated request; raise :class:`AirflowError` unless the status is in ``ok``.

        A 401 (expired token) triggers one fresh login and a retry.
        """
        headers = dict(kwargs.pop("headers", None) or {})
        try:
            for attempt in (1, 2):
                if self._token is None:
                    self._token = self._login()
                headers["Authorization"] = f"Bearer {self._token}"
                resp = self._send(method, path, headers=headers, **kwargs)
                if resp.status_code != 401 or attempt == 2:
                    break
                self._token = None
        except requests.RequestException as exc:
            raise AirflowError(f"cannot reach Airflow at {self.base_url} ({method} {path}): {exc}; "
                               "is the stack up (`flywheel status`)?") from exc
        if resp.status_code not in ok:
            raise AirflowError(f"Airflow {method} {path} answered HTTP {resp.status_code}: {resp.text[:1000]}",
                               resp.status_code)
        return resp

    # -- DAGs and runs -----------------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout_s: float = 120.0, poll_s: float = 2.0) -> dict:
        """Wait until the dag-processor has parsed ``dag_id``; return the DAG's JSON.

        Raises:
          AirflowError: not parsed within ``timeout_s`` seconds; the message lists import errors.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            resp = self.request("GET", f"/api/v2/dags/{_q(dag_id)}", ok=(200, 404))
            if resp.status_code == 200:
                return resp.json()
            if time.monotonic() >= deadline:
                errors = self.request("GET", "/api/v2/importErrors").json().get("import_errors", [])
                listing = "\n".join(f"  {e.get('filename')}: {e.get('stack_trace', '')[-600:]}" for e in errors)
                raise AirflowError(
                    f"DAG {dag_id!r} was not parsed by the dag-processor within {timeout_s:.0f} s; "
                    f"import errors:\n{listing or '  (none: is the file in the DAGs folder?)'}", 404)
            time.sleep(poll_s)

    def unpause(self, dag_id: str) -> None:
        """Unpause ``dag_id`` (new DAGs start paused on the stack)."""
        self.request("PATCH", f"/api/v2/dags/{_q(dag_id)}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> dict:
        """Start a manual run now; return the DagRun JSON (``dag_run_id``, ``state``, ``conf``).

        Raises:
          AirflowError: e.g. status 400 when ``conf`` does not satisfy the DAG's Params.
        """
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/api/v2/dags/{_q(dag_id)}/dagRuns", json=body).json()

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        """The DagRun JSON of one run."""
        return self.request("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}").json()

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Task instances of one run (``task_id``, ``state``, ``try_number``, ...)."""
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances"
        return self.request("GET", path, params={"limit": 100}).json()["task_instances"]

    def log_tail(self, dag_id: str, run_id: str, task_id: str, try_number: int, lines: int = 30) -> str:
        """The last ``lines`` lines of one task try's log, exceptions shown as type, value, frame."""
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/logs/{try_number}"
        resp = self.request("GET", path, params={"full_content": "true"}, headers={"Accept": "application/json"})
        out: list[str] = []
        for item in resp.json().get("content", []):
            if not isinstance(item, dict):
                out.extend(str(item).splitlines())
                continue
            if not str(item.get("event", "")).startswith("::"):
                out.append(f"{item.get('level', '')} {item.get('event', '')}".strip())
            out.extend(_format_error(item.get("error_detail")))
        return "\n".join(out[-lines:])

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 600.0, poll_s: float = 2.0) -> dict:
        """Poll a run until it is ``success`` or ``failed``; return its DagRun JSON.

        Raises:
          AirflowRunFailed: the run did not end within ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.dag_run(dag_id, run_id)
            if run["state"] in TERMINAL_STATES:
                return run
            if time.monotonic() >= deadline:
                raise AirflowRunFailed(
                    f"DAG run {dag_id}/{run_id} still {run['state']!r} after {timeout_s:.0f} s\n"
                    + self.failure_report(dag_id, run_id))
            time.sleep(poll_s)

    def failure_report(self, dag_id: str, run_id: str) -> str:
        """Each task's state, then the log tail of every task that failed or waits for a retry."""
        tis = self.task_instances(dag_id, run_id)
        parts = ["task states: " + ", ".join(f"{t['task_id']}={t['state']}" for t in tis)]
        for ti in tis:
            if ti["state"] in ("failed", "up_for_retry") and ti.get("try_number"):
                tail = self.log_tail(dag_id, run_id, ti["task_id"], ti["try_number"])
                parts.append(f"--- {ti['task_id']} log tail (try {ti['try_number']}) ---\n{tail}")
        return "\n".join(parts)

    def run_dag(self, dag_id: str, conf: dict | None = None, timeout_s: float = 600.0) -> dict:
        """Wait for the DAG to be parsed, unpause it, trigger it and wait; return the run's JSON.

        Raises:
          AirflowRunFailed: the run failed or timed out; the message says which task and why.
        """
        self.wait_for_dag(dag_id)
        self.unpause(dag_id)
        run = self.wait_for_run(dag_id, self.trigger(dag_id, conf)["dag_run_id"], timeout_s)
        if run["state"] != "success":
            raise AirflowRunFailed(f"DAG run {dag_id}/{run['dag_run_id']} ended {run['state']!r}\n"
                                   + self.failure_report(dag_id, run["dag_run_id"]))
        return run
