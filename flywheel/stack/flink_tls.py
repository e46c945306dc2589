"""Mutual TLS on the Flink cluster's own connections (``flink.internal_tls``): the JobManager's and
TaskManagers' RPC (Pekko), the blob server and the TaskManagers' data exchange.

Flink's recipe for internal connectivity: one self-signed key, used as both keystore and
truststore by every process of the cluster, so a peer gets in only by holding that key; host
names are not checked (peers dial each other by IP). ``ensure`` makes it once, with keytool, in
``<state>/flink/tls/internal.p12`` (mode 0600; password flywheel/secrets.py
FLINK_INTERNAL_PASSWORD). In compose the JobManager's container makes it and the TaskManagers
read it from their shared volume.
"""

from __future__ import annotations

import os
from pathlib import Path

from flywheel.config import FlywheelConfig
from flywheel.secrets import FLINK_INTERNAL_PASSWORD, value, where
from flywheel.stack.base import StackError
from flywheel.stack.keytool import check_password, keytool, store, wrong_password


def keystore(cfg: FlywheelConfig) -> Path:
    return cfg.stack.root / "flink" / "tls" / "internal.p12"


def settings(cfg: FlywheelConfig) -> dict:
    """config.yaml's ``security.ssl.internal`` (which holds the password: the file is 0600)."""
    path, password = str(keystore(cfg)), value(cfg, FLINK_INTERNAL_PASSWORD)
    return {"enabled": True, "keystore": path, "truststore": path, "keystore-password": password,
            "key-password": password, "truststore-password": password}


def ensure(cfg: FlywheelConfig, make: bool = True) -> None:
    """The cluster's key: made when missing (``make``; else a StackError), then checked to open
    with the configured password."""
    path, password = keystore(cfg), value(cfg, FLINK_INTERNAL_PASSWORD)
    source = where(cfg, FLINK_INTERNAL_PASSWORD)
    check_password(password, source)
    if not path.exists():
        if not make:
            raise StackError(f"{path} is missing: the JobManager makes Flink's internal key at its first start "
                             "(in compose: start flink-jobmanager first; the TaskManagers share its volume)")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = path.with_suffix(".new")
        fresh.unlink(missing_ok=True)
        keytool(password, "-genkeypair", "-alias", "flink.internal", "-keyalg", "RSA", "-keysize", "2048",
                "-validity", "3650", "-dname", "CN=flink.internal,O=Flywheel", *store(fresh),
                what="making Flink's internal TLS key", source=source)
        os.chmod(fresh, 0o600)
        os.replace(fresh, path)
        return
    try:
        keytool(password, "-list", *store(path), what="opening Flink's internal TLS key", source=source)
    except StackError as exc:
        if not wrong_password(exc):
            raise
        raise StackError(f"{path} does not open with Flink's internal password ({source}): "
                         f"set that password back, or delete {path} (and restart the whole cluster)") from None
