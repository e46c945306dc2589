"""supervisord runs the stack's programs: config rendering and control over its XML-RPC socket."""

from __future__ import annotations

import shlex
import subprocess
import time
import xmlrpc.client
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from flywheel.config import FlywheelConfig
from flywheel.stack.base import VENV, Program, Service, StackError, write


def _paths(cfg: FlywheelConfig) -> dict[str, Path]:
    root = cfg.stack.root
    return {
        "conf": root / "supervisord.conf",
        "sock": root / "supervisor.sock",
        "pid": root / "supervisord.pid",
        "log": cfg.stack.logs / "supervisord.log",
    }


def _escape(value: str) -> str:
    return value.replace("%", "%%")


def _env_value(value: str) -> str:
    """A value for supervisord's ``environment=``, which splits with non-POSIX shlex (quotes
    are kept, not escaped, then stripped): quote with whichever quote the value lacks."""
    quote = "'" if '"' in value else '"'
    if quote in value or value[:1] in "'\"" and value or value[-1:] in "'\"" and value:
        raise ValueError(f"cannot pass {value!r} through supervisord's environment= (mixed quotes)")
    return quote + _escape(value) + quote


def _command(cfg: FlywheelConfig, prog: Program) -> list[str]:
    """``prog``'s command; a program off the feed path runs under ``nice`` so that its bursts
    (a Flink checkpoint, a training step) wait for the model server and serving PS, not the
    other way round."""
    nice = cfg.stack.background_nice
    return prog.command if prog.serves_requests or not nice else ["nice", "-n", str(nice), *prog.command]


def _program_section(cfg: FlywheelConfig, prog: Program) -> str:
    env = ",".join(f"{k}={_env_value(v)}" for k, v in prog.env.items())
    lines = [
        f"[program:{prog.name}]",
        f"command={_escape(shlex.join(_command(cfg, prog)))}",
        f"directory={prog.directory}",
        "autostart=false",
        "autorestart=unexpected",
        "startsecs=3",
        "startretries=2",
        "stopasgroup=true",
        "killasgroup=true",
        f"stopwaitsecs={prog.stop_wait_s}",
        "redirect_stderr=true",
        f"stdout_logfile={cfg.stack.logs / (prog.name + '.log')}",
        "stdout_logfile_maxbytes=50MB",
        "stdout_logfile_backups=2",
    ]
    if env:
        lines.append(f"environment={env}")
    return "\n".join(lines) + "\n"


def render(cfg: FlywheelConfig, services: list[Service]) -> Path:
    p = _paths(cfg)
    cfg.stack.logs.mkdir(parents=True, exist_ok=True)
    head = f"""\
; Rendered by flywheel.stack.supervisor; edits here are overwritten by `make up`.
[unix_http_server]
file={p['sock']}
chmod=0700

[supervisord]
logfile={p['log']}
pidfile={p['pid']}
childlogdir={cfg.stack.logs}
directory={cfg.stack.root}
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{p['sock']}

"""
    body = "\n".join(_program_section(cfg, prog) for svc in services for prog in svc.programs)
    conf = write(p["conf"], head + body)
    conf.chmod(0o600)  # programs' environment= lines carry secrets (the MLflow server's)
    return conf


class Supervisor:
    """Client of the stack's supervisord (started on demand)."""

    def __init__(self, cfg: FlywheelConfig):
        self.cfg = cfg
        self.paths = _paths(cfg)

    @property
    def rpc(self):
        transport = SupervisorTransport(None, None, serverurl=f"unix://{self.paths['sock']}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def running(self) -> bool:
        if not self.paths["sock"].exists():
            return False
        try:
            return self.rpc.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    def start_daemon(self) -> None:
        """Start supervisord (it daemonizes) with the rendered config, or reload it.

        On a reload, a program whose section changed (command, environment) is stopped and
        re-added; one that was running is started again with its new section, so a command
        that starts only some services (``up --only``) never leaves the others stopped."""
        if self.running():
            running = {p["group"] for p in self.rpc.getAllProcessInfo() if p["statename"] in ("RUNNING", "STARTING")}
            added, changed, removed = self.rpc.reloadConfig()[0]
            for name in removed + changed:
                self.rpc.stopProcessGroup(name, True)
                self.rpc.removeProcessGroup(name)
            for name in changed + added:
                self.rpc.addProcessGroup(name)
            for name in changed:
                if name in running:
                    self.rpc.startProcessGroup(name, False)
            return
        supervisord = str(VENV / "ml" / "bin" / "supervisord")
        proc = subprocess.run([supervisord, "-c", str(self.paths["conf"])], capture_output=True, text=True)
        if proc.returncode != 0:
            raise StackError(f"supervisord did not start: {proc.stderr.strip() or proc.stdout.strip()}")
        deadline = time.monotonic() + 20
        while not self.running():
            if time.monotonic() > deadline:
                raise StackError(f"supervisord did not answer on {self.paths['sock']}; see {self.paths['log']}")
            time.sleep(0.2)

    def start(self, name: str) -> None:
        info = self.rpc.getProcessInfo(name)
        if info["statename"] in ("RUNNING", "STARTING"):
            return
        try:
            self.rpc.startProcess(name, False)
        except xmlrpc.client.Fault as exc:
            if "ALREADY_STARTED" not in exc.faultString:
                raise StackError(f"supervisord could not start {name}: {exc.faultString}") from None

    def stop(self, name: str) -> None:
        """Stop one program (SIGTERM to its group, SIGKILL after its stopwaitsecs); no error if stopped."""
        try:
            self.rpc.stopProcess(name, True)
        except xmlrpc.client.Fault as exc:
            if "NOT_RUNNING" not in exc.faultString and "BAD_NAME" not in exc.faultString:
                raise StackError(f"supervisord could not stop {name}: {exc.faultString}") from None

    def info(self) -> dict[str, dict]:
        """Program name -> supervisord's process info (statename, pid, ...)."""
        if not self.running():
            return {}
        return {p["name"]: p for p in self.rpc.getAllProcessInfo()}

    def shutdown(self, timeout_s: float = 90) -> None:
        """Stop every program (SIGTERM to its process group, then SIGKILL) and supervisord."""
        if not self.running():
            return
        pid_text = self.paths["pid"].read_text().strip() if self.paths["pid"].exists() else ""
        try:
            self.rpc.stopAllProcesses(True)
        finally:
            try:
                self.rpc.shutdown()
            except (OSError, xmlrpc.client.Fault):
                pass
        deadline = time.monotonic() + timeout_s
        while pid_text and Path(f"/proc/{pid_text}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
