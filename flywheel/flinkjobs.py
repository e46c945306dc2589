"""Submit, watch and cancel PyFlink jobs on the stack's Flink cluster (from the ML environment)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import requests

from flywheel.config import REPO_ROOT, FlywheelConfig
from flywheel.secrets import KAFKA_PASSWORD, flink_auth, flink_client_headers, kafka_login, kafka_user_password
from flywheel.stack import flink
from flywheel.stack.base import StackError

TERMINAL = {"FINISHED", "FAILED", "CANCELED"}


def rest_session(cfg: FlywheelConfig) -> requests.Session:
    """A ``requests`` session logged in at Flink's REST door (flink.require_login), for readers
    that make several calls."""
    http = requests.Session()
    http.auth = flink_auth(cfg)
    return http


def kafka_argv(cfg: FlywheelConfig, role: str | None = None) -> list[str]:
    """The Kafka arguments of a job (streaming/jobs/kafka_login.py): the bootstrap address, with
    ``kafka.sasl`` the user of ``role`` (flywheel.secrets.kafka_login; None: the super user;
    :func:`submit` hands the job its password), with ``kafka.tls`` the broker's CA certificate
    (the same path on the cluster's hosts: compose mounts it there)."""
    from flywheel.stack.kafka_tls import ca_pem

    login = kafka_login(cfg, role)
    return ["--bootstrap", cfg.kafka_bootstrap, "--kafka-user", login[0] if login else "",
            "--kafka-ca", str(ca_pem(cfg)) if cfg.kafka.tls else ""]


def submit(cfg: FlywheelConfig, script: Path, args: list[str], timeout_s: float = 180,
           savepoint: str | None = None) -> str:
    """Submit ``script`` detached to the cluster (from ``savepoint``, if given); return its
    Flink job id.

    The `flink` client compiles the Python job with the Flink environment's interpreter and
    the cluster's FLINK_CONF_DIR/FLINK_LIB_DIR (which holds the Kafka connector). The Kafka
    password reaches the job, and the REST login the client, in the client's environment,
    never on its command line.
    """
    cli = flink.PYFLINK_HOME / "bin" / "flink"
    env = {**os.environ, **flink.environment(cfg)}
    user = args[args.index("--kafka-user") + 1] if "--kafka-user" in args else ""
    if user:
        # the password of the job's --kafka-user (kafka_argv), read by streaming/jobs/kafka_login.py.
        # Keep "PASSWORD" in the name: the flink client logs the Python process's environment,
        # masking variables whose name holds "password"
        env[KAFKA_PASSWORD.env] = kafka_user_password(cfg, user)
    env.update(flink_client_headers(cfg))  # the CLI's login at the REST door (flink.require_login)
    restore = ["--fromSavepoint", savepoint] if savepoint else []
    cmd = [str(cli), "run", "--detached", *restore, "--python", str(script), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=timeout_s)
    out = proc.stdout + proc.stderr
    match = re.search(r"JobID ([0-9a-f]{32})", out)
    if proc.returncode != 0 or not match:
        tail = "\n".join(out.strip().splitlines()[-25:])
        raise StackError(f"flink run {script.name} failed (exit {proc.returncode}):\n{tail}")
    return match.group(1)


def state(cfg: FlywheelConfig, job_id: str) -> str:
    resp = requests.get(f"{cfg.flink_url}/jobs/{job_id}", auth=flink_auth(cfg), timeout=5)
    resp.raise_for_status()
    return resp.json()["state"]


def wait(cfg: FlywheelConfig, job_id: str, until: set[str] = TERMINAL, timeout_s: float = 180) -> str:
    """Poll the job until its state is in ``until``; return that state (or raise on timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = state(cfg, job_id)
        if current in until:
            return current
        if current in TERMINAL:
            raise StackError(f"Flink job {job_id} ended {current} while waiting for {sorted(until)}; see {cfg.flink_url}/#/job/completed/{job_id}")
        if time.monotonic() > deadline:
            raise StackError(f"Flink job {job_id} still {current} after {timeout_s:.0f}s")
        time.sleep(1)


def cancel(cfg: FlywheelConfig, job_id: str, timeout_s: float = 60) -> None:
    """Cancel the job and wait until it has ended (its task slots are free again)."""
    requests.patch(f"{cfg.flink_url}/jobs/{job_id}?mode=cancel", auth=flink_auth(cfg), timeout=5).raise_for_status()
    wait(cfg, job_id, timeout_s=timeout_s)


def stop_with_savepoint(cfg: FlywheelConfig, job_id: str, timeout_s: float = 300) -> str:
    """Stop the job gracefully with a savepoint (in ``flink.savepoint_dir``; no drain, so
    pending timers stay in state); return the savepoint's location once the job is stopped."""
    resp = requests.post(f"{cfg.flink_url}/jobs/{job_id}/stop", auth=flink_auth(cfg), json={"drain": False}, timeout=10)
    resp.raise_for_status()
    trigger = resp.json()["request-id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = requests.get(f"{cfg.flink_url}/jobs/{job_id}/savepoints/{trigger}", auth=flink_auth(cfg),
                            timeout=10).json()
        if body.get("status", {}).get("id") == "COMPLETED":
            operation = body.get("operation", {})
            if "location" not in operation:
                cause = operation.get("failure-cause", {}).get("stack-trace", str(operation))[:3000]
                raise StackError(f"stop-with-savepoint of Flink job {job_id} failed; it keeps running:\n{cause}")
            wait(cfg, job_id, timeout_s=max(10.0, deadline - time.monotonic()))
            return operation["location"]
        time.sleep(1)
    raise StackError(f"stop-with-savepoint of Flink job {job_id} did not finish in {timeout_s:.0f}s; "
                     f"see {cfg.flink_url}/#/job/running/{job_id}/checkpoints")


def running(cfg: FlywheelConfig, name: str) -> list[str]:
    """Ids of the cluster's jobs named ``name`` that have not ended."""
    jobs = requests.get(f"{cfg.flink_url}/jobs/overview", auth=flink_auth(cfg), timeout=5).json()["jobs"]
    return [j["jid"] for j in jobs if j["state"] not in TERMINAL and j["name"] == name]


def metrics(cfg: FlywheelConfig, job_id: str, contains: str) -> dict[str, float]:
    """The job's operator metrics whose name contains ``contains``, summed over subtasks:
    ``{name without the subtask prefix: value}`` (e.g. ``parse_features.flywheel.accepted``)."""
    base, http = f"{cfg.flink_url}/jobs/{job_id}", rest_session(cfg)
    totals: dict[str, float] = {}
    for vertex in http.get(base, timeout=5).json()["vertices"]:
        url = f"{base}/vertices/{vertex['id']}/metrics"
        names = [m["id"] for m in http.get(url, timeout=5).json() if contains in m["id"]]
        if names:
            got = http.get(url, params={"get": ",".join(names)}, timeout=5).json()
            if isinstance(got, dict):  # {"errors": [...]}
                raise StackError(f"Flink refused metrics {names} of job {job_id}: {got}")
            for m in got:
                name = m["id"].split(".", 1)[1]  # drop the subtask index
                totals[name] = totals.get(name, 0.0) + float(m["value"])
    return totals


def exceptions(cfg: FlywheelConfig, job_id: str) -> str:
    """The root exception Flink recorded for a job, for error messages."""
    body = requests.get(f"{cfg.flink_url}/jobs/{job_id}/exceptions", auth=flink_auth(cfg), timeout=5).json()
    return (body.get("root-exception") or str(body.get("exceptionHistory", {}).get("entries", ""))[:2000])


def wait_for_checkpoint(cfg: FlywheelConfig, job_id: str, timeout_s: float = 120) -> dict:
    """Wait for the job's first completed checkpoint; return Flink's record of it (with
    ``external_path``, the checkpoint's location on durable storage)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = requests.get(f"{cfg.flink_url}/jobs/{job_id}/checkpoints", auth=flink_auth(cfg), timeout=5).json()
        latest = (stats.get("latest") or {}).get("completed")
        if latest:
            return latest
        time.sleep(1)
    raise StackError(f"Flink job {job_id} completed no checkpoint in {timeout_s:.0f}s; see {cfg.flink_url}/#/job/running/{job_id}/checkpoints")
