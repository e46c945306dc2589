"""The closed loop on the test stack, for the tests that need it running: a champion (reused,
or backfilled and retrained on ``folder``), the Flink joiner, and the supervised model server
(catalogue ``folder``) and online trainer."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path

import requests

from flywheel import flinkjobs, joiner_job
from flywheel.paths import ML_PYTHON
from flywheel.prometheus import scrape, value
from flywheel.stack import control
from flywheel.stack.base import wait_until
from paramserver.client import PSClient
from pipelines.batch.publish import champion
from serving.catalogue import Catalogue

EVAL_DAY = "2031-03-05"  # test_daily_retrain's data: the same synthetic folder, the same champion
EPOCHS = 5  # of the champion (test_daily_retrain's too): 1 epoch of this data is ~9 steps, a near-random
            # dense graph (click AUC 0.51) through which a new user's row learns slowly or not at all
LOOP = ["model-server", "online-trainer", "joiner-keeper"]


def flywheel(*args: str) -> None:
    subprocess.run([str(ML_PYTHON.parent / "flywheel"), *args], check=True, timeout=900)


def wait(check, timeout_s: float, what: str, interval_s: float = 0.5) -> None:
    if not wait_until(check, timeout_s, interval_s):
        raise AssertionError(f"{what} not within {timeout_s:.0f}s")


@contextmanager
def running_loop(stack, folder: Path):
    """Yields {cfg, url, metrics (the trainer's), catalogue, ps (a serving PSClient)}; stops
    what it started."""
    if champion(stack) is None:
        flywheel("import", str(folder), "--end-date", EVAL_DAY, "--days", "4", "--negatives", "2")
        flywheel("retrain", "--date", EVAL_DAY, "--mode", "scratch", "--epochs", str(EPOCHS), "--train-days", "3",
                 "--force-publish")
    started_joiner = None
    if not flinkjobs.running(stack, joiner_job.job_name(stack)):
        started_joiner = joiner_job.start(stack)
    cfg = stack.model_copy(update={"serving": stack.serving.model_copy(update={"catalogue": str(folder)})})
    control.up(cfg, only=LOOP, echo=lambda msg: print(msg, flush=True))
    url = f"http://{cfg.stack.host}:{cfg.serving.port}"
    ps = None
    try:
        wait(lambda: requests.get(f"{url}/health", timeout=5).json()["model_version"], 120,
             "the champion in the model server")
        metrics = f"http://{cfg.stack.host}:{cfg.online.metrics_port}/metrics"
        wait(lambda: value(scrape(metrics), "flywheel_online_champion_version") > 0, 180, "the trainer on the champion")
        ps = PSClient.from_config(cfg, role="serving")
        yield {"cfg": cfg, "url": url, "metrics": metrics, "catalogue": Catalogue.load(folder), "ps": ps}
    finally:
        if ps is not None:
            ps.close()
        control.stop(cfg, LOOP)
        if started_joiner:
            for job in flinkjobs.running(stack, joiner_job.job_name(stack)):  # the keeper may have resubmitted it
                joiner_job.cancel(stack, job)
