"""The door of Flink's REST API and web UI: Caddy (Debian's package) in front of the JobManager,
asking for HTTP basic auth (``flink.user``, password from flywheel/secrets.py).

Flink has no authentication of its own. With ``flink.require_login`` the JobManager's REST
listener binds loopback on ``flink.rest_backend_port`` and only the door, on
``flink.rest_port``, forwards to it; clients (the ``flink`` CLI through
``FLINK_REST_CLIENT_HEADERS``, the Python helpers with ``requests``' ``auth=``) log in. The
password is stored only as Caddy's bcrypt hash, in a file of mode 0600.
"""

from __future__ import annotations

import shutil
import subprocess

from flywheel.config import FlywheelConfig
from flywheel.secrets import FLINK_PASSWORD, value
from flywheel.stack.base import Program, StackError, write


def caddy() -> str:
    path = shutil.which("caddy")
    if not path:
        raise StackError("caddy not found: it guards Flink's REST API (flink.require_login). Run 'make setup' "
                         "(apt-get install caddy), or set flink.require_login: false on a host nobody else uses")
    return path


def home(cfg: FlywheelConfig):
    return cfg.stack.root / "flink" / "door"


def password_hash(password: str) -> str:
    """Caddy's bcrypt hash of ``password`` (given on stdin, never on a command line)."""
    proc = subprocess.run([caddy(), "hash-password"], input=password + "\n", capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0 or not proc.stdout.strip().startswith("$2"):
        raise StackError(f"caddy hash-password failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip()


def caddyfile(cfg: FlywheelConfig, hashed: str) -> str:
    f = cfg.flink
    return f"""\
# Rendered by flywheel.stack.flink_door from the config; edits here are overwritten.
{{
	admin off
	auto_https off
}}
:{f.rest_port} {{
	bind {cfg.stack.bind}
	basicauth {{
		{f.user} {hashed}
	}}
	reverse_proxy 127.0.0.1:{f.rest_backend_port}
}}
"""


def prepare(cfg: FlywheelConfig) -> None:
    write(home(cfg) / "Caddyfile", caddyfile(cfg, password_hash(value(cfg, FLINK_PASSWORD))), mode=0o600)


def program(cfg: FlywheelConfig) -> Program:
    door = home(cfg)
    env = {"HOME": str(door), "XDG_DATA_HOME": str(door / "data"), "XDG_CONFIG_HOME": str(door / "config")}
    # the path is checked by prepare() (before a start), so status and down work without caddy
    return Program("flink-door", [shutil.which("caddy") or "caddy", "run", "--config", str(door / "Caddyfile"), "--adapter", "caddyfile"],
                   env=env)
