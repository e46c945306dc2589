"""The JDK's keytool, for the stack's keystores (HDFS's TLS, Flink's internal TLS): PKCS12 files
whose password reaches keytool through its environment (``-storepass:env``), never a command
line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from flywheel.stack.base import StackError, run_once

PASSWORD_ENV = "FLYWHEEL_KEYTOOL_PASSWORD"


def store(path: Path) -> tuple[str, ...]:
    """keytool's arguments naming a PKCS12 keystore opened with the password of :func:`keytool`."""
    return ("-storetype", "PKCS12", "-keystore", str(path), "-storepass:env", PASSWORD_ENV)


def check_password(password: str, source: str) -> None:
    """A StackError unless keytool would take ``password`` (from ``source``, named in it)."""
    if len(password) < 6:
        raise StackError(f"keystore passwords need at least 6 characters; the one from {source} has "
                         f"{len(password)}: set a longer one")


def wrong_password(error: StackError) -> bool:
    """Whether keytool failed because the keystore's password is not the one given."""
    return "password was incorrect" in str(error)


def keytool(password: str, *args: str, what: str, source: str = "its secret") -> str:
    """Run keytool with ``args`` (``store(path)`` for each keystore) and the keystores' password
    (from ``source``, named in errors); its output, or a StackError."""
    check_password(password, source)
    path = shutil.which("keytool")
    if not path:
        raise StackError("keytool not found: it comes with the JDK (apt-get install openjdk-17-jdk-headless)")
    return run_once([path, *args], what, env={**os.environ, PASSWORD_ENV: password}, timeout=120)
