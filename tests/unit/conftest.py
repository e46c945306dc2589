"""Unit-test fixtures."""

import pytest

from flywheel import secrets
from flywheel.config import load_config


@pytest.fixture
def state_cfg(tmp_path, monkeypatch):
    """The default config with its state dir in tmp_path and no secret in the environment: every
    secret comes from a fresh file there."""
    for s in secrets.ALL:
        monkeypatch.delenv(s.env, raising=False)
    return load_config(files=[], environ={"FLYWHEEL__STACK__STATE_DIR": str(tmp_path)})


@pytest.fixture
def kafka_props():
    """The Kafka broker's rendered properties of a config, as a dict."""
    from flywheel.stack import kafka

    def props(cfg) -> dict[str, str]:
        return dict(line.split("=", 1) for line in kafka.server_properties(cfg).splitlines()
                    if line and not line.startswith("#"))
    return props
