"""Integration tests run against the real stack, started once per session on the test ports
(config/test.yaml) from an empty state dir, and stopped at the end.

Set FLYWHEEL_TEST_REUSE=1 to keep the stack (and its data) between runs while developing.
"""

from __future__ import annotations

import os
import shutil

import pytest

from flywheel.config import load_config
from flywheel.stack import control


@pytest.fixture(scope="session")
def stack():
    """The running test stack's config (Kafka, HDFS, Flink, MLflow, Airflow all healthy)."""
    cfg = load_config()
    reuse = os.environ.get("FLYWHEEL_TEST_REUSE") == "1"
    if not reuse:
        control.down(cfg)
        shutil.rmtree(cfg.stack.root, ignore_errors=True)
    control.up(cfg, echo=lambda msg: print(msg, flush=True))
    yield cfg
    if not reuse:
        control.down(cfg)


def pytest_collection_modifyitems(items):
    """Chaos tests last: they kill and restart the stack's components under the others' feet."""
    items.sort(key=lambda item: item.get_closest_marker("chaos") is not None)
