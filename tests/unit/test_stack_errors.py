"""Bad input to the stack's tooling ends in one clear message (cause + fix), not a traceback."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.config import REPO_ROOT, load_config
from flywheel.stack import control
from flywheel.stack.base import StackError, jars

FLYWHEEL = Path(sys.executable).parent / "flywheel"


def test_busy_port_is_named_with_its_owner_and_the_fix(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = load_config(files=[], environ={"FLYWHEEL__KAFKA__PORT": str(port),
                                             "FLYWHEEL__STACK__STATE_DIR": str(tmp_path / "state")})
        with pytest.raises(StackError) as err:
            control.up(cfg, only=["kafka"], echo=lambda _: None)
    msg = str(err.value)
    assert f"127.0.0.1:{port} (kafka.port) is already in use" in msg
    assert f"pid {os.getpid()}" in msg
    assert "FLYWHEEL__KAFKA__PORT" in msg
    assert not (tmp_path / "state" / "supervisord.conf").exists(), "nothing may start when a port is busy"


def test_unknown_service_is_refused():
    with pytest.raises(StackError, match="unknown service"):
        control.up(load_config(files=[], environ={}), only=["zookeeper"])


def test_missing_jvm_artifacts_point_at_setup():
    with pytest.raises(StackError, match="make setup"):
        jars("no-such-module")


def test_cli_reports_bad_config_without_traceback():
    env = {**os.environ, "FLYWHEEL__KAFKA__PORT": "abc"}
    proc = subprocess.run([str(FLYWHEEL), "status"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert "kafka.port" in proc.stderr and "'abc'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_setup_without_java_says_how_to_install_it(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "python3.11"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    proc = subprocess.run(["/bin/bash", str(REPO_ROOT / "scripts/setup.sh")], capture_output=True, text=True,
                          env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, timeout=60)
    assert proc.returncode == 1
    assert "java not found" in proc.stderr and "openjdk-17" in proc.stderr
