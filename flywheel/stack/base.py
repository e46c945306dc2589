"""What every service of the local stack is made of, and the probes that say it is healthy.

A :class:`Service` is one or more supervised :class:`Program` s (foreground processes run by
supervisord), a ``prepare`` step that renders its config files and does one-time
initialisation (format storage, migrate a database), a ``healthy`` probe, and an optional
``post_start`` step (create topics, HDFS folders) run once it is healthy.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from flywheel.config import FlywheelConfig
from flywheel.paths import AIRFLOW_BIN, FLINK_PYTHON, JVM_DIR, ML_PYTHON, REPO_ROOT, VENV  # noqa: F401


class StackError(RuntimeError):
    """The stack cannot start or is unhealthy; the message says why and what to do."""


@dataclass(frozen=True)
class Program:
    """One foreground process supervised by supervisord."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    directory: Path = REPO_ROOT
    stop_wait_s: int = 20
    # on a feed request's path (model server, serving PS): runs at normal CPU priority while
    # every other program runs at ``stack.background_nice``
    serves_requests: bool = False


@dataclass
class Service:
    """A service of the stack: its programs, how to prepare it and how to tell it is up."""

    name: str
    url: str
    programs: list[Program]
    prepare: Callable[[], None]
    healthy: Callable[[], bool]
    post_start: Callable[[], None] = lambda: None
    ports: list[int] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)  # started with it by `up --only`
    start_after: list[str] = field(default_factory=list)  # its programs start once these are healthy
    on_demand: bool = False  # not started by a bare `up` (the loop: `flywheel demo` / `up --only`)


def java() -> str:
    """Path of the java binary, or a StackError naming the fix."""
    path = shutil.which("java")
    if not path:
        raise StackError("java not found on PATH: install OpenJDK 17 (apt-get install openjdk-17-jdk-headless)")
    return path


def jars(module: str) -> str:
    """Classpath glob of a Maven module's jars fetched by set-up (build/jvm/<module>/*)."""
    folder = JVM_DIR / module
    if not folder.is_dir() or not any(folder.glob("*.jar")):
        raise StackError(f"{folder} has no jars: run 'make setup' to fetch the JVM artifacts from Maven Central")
    return f"{folder}/*"


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise StackError(f"{what} is missing ({path}): run 'make setup'")
    return path


def write(path: Path, text: str, mode: int | None = None) -> Path:
    """Write ``text`` to ``path``; with ``mode`` (e.g. 0o600 for a file holding a secret) the file
    never has another mode, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        path.write_text(text)
        return path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # an existing file keeps its mode on open
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def run_once(cmd: list[str], what: str, env: dict[str, str] | None = None, timeout: float = 300,
             stdin: str | None = None) -> str:
    """Run a one-time initialisation command (fed ``stdin``: how a secret reaches it, never its
    command line); raise StackError with its output on failure."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO_ROOT, input=stdin)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise StackError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    """True when we could bind host:port ourselves."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def http_json(url: str, timeout: float = 2.0, auth: tuple[str, str] | None = None) -> dict | list | None:
    """GET url (logged in with ``auth``, if given) and decode JSON; None on any connection error or
    non-2xx answer."""
    try:
        resp = requests.get(url, timeout=timeout, auth=auth)
    except requests.RequestException:
        return None
    if not resp.ok:
        return None
    try:
        return resp.json()
    except ValueError:
        return None


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 1.0) -> bool:
    """Poll ``check`` until it is true or ``timeout_s`` passes; return its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return True
        except Exception:  # noqa: BLE001 - a probe that throws is simply not healthy yet
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def services(cfg: FlywheelConfig) -> list[Service]:
    """Every service of the local stack, in start order."""
    from flywheel.stack import airflow, flink, hdfs, kafka, kerberos, loop, mlflow_server, paramserver

    return [
        kafka.service(cfg),
        *([kerberos.service(cfg)] if cfg.kerberos.enabled else []),
        hdfs.service(cfg),
        flink.service(cfg),
        mlflow_server.service(cfg),
        airflow.service(cfg),
        paramserver.service(cfg),
        *loop.services(cfg),
    ]
