"""``make demo``'s default data path on the real test stack, as a fresh clone meets it: no
folder given and no MovieLens host reachable, so ``flywheel demo`` generates the synthetic
world into an empty cache, checks it against the data contract, and runs the loop on it
(the model server's catalogue, the simulator's population); the simulator's users get feeds
and act, the joiner joins their actions and the online trainer learns from them. Then
``flywheel import`` with no folder lands the same default data, impressions as its negatives.

The champion is the one test_daily_retrain published when it ran first; alone, ``flywheel
demo`` bootstraps one from this data (backfill + one retrain), which is the fresh-stack path.
What the demo started (the loop's programs, its joiner job) is stopped again: the Flink tests
after this one need the cluster's slots. The demo's environment reaches Airflow's programs,
which are restarted with it (not left stopped: flywheel/stack/supervisor.py), then with the
suite's own again.
"""

from __future__ import annotations

import os
import subprocess

import pyarrow.parquet as pq
import pytest
import requests

from datasets import load
from flywheel import flinkjobs, joiner_job
from flywheel.hdfs import webhdfs
from flywheel.paths import ML_PYTHON
from flywheel.prometheus import scrape, value
from flywheel.stack import control
from tests.integration.loop_stack import wait

pytestmark = pytest.mark.integration
LOOP = ["model-server", "online-trainer", "joiner-keeper", "simulator"]
WORLD = {"users": 80, "items": 150, "days": 4, "seed": 3}
LAND_DAY = "2031-06-30"  # far from the other tests' days: this landing replaces only its own


def flywheel(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ML_PYTHON.parent / "flywheel"), *args], env=env, capture_output=True, text=True,
                          timeout=1500)


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory) -> dict:
    """The CLI's environment as on a fresh clone offline: an empty data cache, MovieLens unreachable."""
    cache = tmp_path_factory.mktemp("data-cache")
    return {**os.environ, "FLYWHEEL__DATA__CACHE": str(cache), "FLYWHEEL__DATA__SOURCE": "auto",
            "FLYWHEEL__DATA__SYNTHETIC": "{" + ", ".join(f"{k}: {v}" for k, v in WORLD.items()) + "}",
            "FLYWHEEL_MOVIELENS_URL": "http://127.0.0.1:9/ml-100k.zip"}  # discard port: refused at once


def test_demo_with_no_data_runs_the_loop_on_the_synthetic_world(stack, offline_env):
    host = stack.stack.host
    trainer = f"http://{host}:{stack.online.metrics_port}/metrics"
    simulator = f"http://{host}:{stack.simulator.metrics_port}/metrics"
    joiners = set(flinkjobs.running(stack, joiner_job.job_name(stack)))
    try:
        out = flywheel(offline_env, "demo", "--watch-s", "0")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        lines = out.stdout.splitlines()
        assert sum("MovieLens 100K is unavailable" in line for line in lines) == 1, out.stdout
        assert "using the synthetic world (80 users, 150 items, seed 3)" in out.stdout
        folder = next(line.split(" in ")[-1] for line in lines if "using the synthetic world" in line)
        assert folder.startswith(offline_env["FLYWHEEL__DATA__CACHE"])
        assert "with impressions" in out.stdout and "The loop runs" in out.stdout

        wait(lambda: value(scrape(simulator), "flywheel_simulator_feed_requests_total", status="200") >= 20, 300,
             "20 feeds for the synthetic world's users")
        wait(lambda: sum(s.value for s in scrape(simulator) if s.name == "flywheel_simulator_actions_total") >= 5,
             300, "the simulated users' actions")
        wait(lambda: value(scrape(trainer), "flywheel_online_examples_total") > 0, 300,
             "examples joined from the simulator's actions, trained online")

        world = load(folder)
        user = int(world.events["user"].iloc[-1])
        feed = requests.get(f"http://{host}:{stack.serving.port}/feed", params={"user_id": user, "k": 5},
                            timeout=30).json()
        shown = feed["items"]
        assert shown and all(item["title"] == world.titles[item["item_id"]] for item in shown
                             if item["item_id"] in world.titles)  # the catalogue is the synthetic world's
        assert any(g.startswith(("category=", "brand=")) for item in shown for g in item["genres"])
    finally:
        control.stop(stack, LOOP)
        for job in set(flinkjobs.running(stack, joiner_job.job_name(stack))) - joiners:  # the demo's own joiner
            joiner_job.cancel(stack, job)
        # Airflow's programs carry the caller's FLYWHEEL__ variables (DAG tasks see its config): the
        # demo restarted them with this test's; back to the suite's, healthy, for the tests after
        control.up(stack, only=["airflow"], echo=lambda msg: None)


def test_import_with_no_folder_lands_the_default_data_with_its_impressions(stack, offline_env):
    out = flywheel(offline_env, "import", "--end-date", LAND_DAY, "--days", "3")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "meets the contract" in out.stdout and "real impressions" in out.stdout
    folder = out.stdout.split(": meets the contract")[0].splitlines()[-1]
    world = load(folder)
    fs, root = webhdfs(stack), stack.joiner.examples_dir.rstrip("/")
    days = [f"2031-06-{d}" for d in (28, 29, 30)]
    files = [f for d in days for f in fs.glob(f"{root}/dt={d}/hour=*/backfill.parquet")]
    rows = [r for f in files for r in pq.read_table(fs.open(f, "rb")).to_pylist()]
    assert len(rows) == len(world.events)  # one example per impression: no sampled negatives
    positives = sum(any(r["labels"].values()) for r in rows)
    assert positives == len(world.engaged) and 0 < positives < len(rows) / 3
