"""The smoke job that `make demo` runs crosses every service and reports each step."""

import pytest

from flywheel.smoke import run_smoke

pytestmark = pytest.mark.integration


def test_smoke_job_crosses_every_service(stack):
    timings = run_smoke(stack, rows=64, echo=lambda _: None)
    assert list(timings) == ["kafka produce", "flink passthrough", "kafka consume", "hdfs write",
                             "spark read", "mlflow log", "paramserver sync", "airflow dag"]
    assert all(seconds > 0 for seconds in timings.values())
