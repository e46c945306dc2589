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
