"""``flywheel demo``: the closed loop on the running stack, from nothing to a learning feed.

0. The data: ``--data`` (or ``data.path``), else the default data (``datasets.default``:
   MovieLens 100K fetched with pinned checksums, or offline the seeded synthetic world),
   checked against the data contract before anything starts.
1. A champion: on a stack without one, land the history as 14 days ending yesterday and run
   one daily retrain (what the ``daily_retrain`` DAG does), so serving starts
   from a trained model.
2. The Flink joiner, unless it runs already.
3. The model server, the online trainer and the simulator (supervised, started on demand),
   with the folder as the server's catalogue and the simulator's population.
4. Where to look, then a few lines of live figures (feeds/s, examples trained, rolling AUC,
   freshness) so the loop is seen to turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

from flywheel.config import FlywheelConfig
from flywheel.prometheus import scrape, value
from flywheel.stack.base import StackError

LOOP = ["model-server", "online-trainer", "joiner-keeper", "simulator"]


def with_data(cfg: FlywheelConfig, data: Path) -> FlywheelConfig:
    """``cfg`` with ``data`` as the model server's catalogue and the simulator's population."""
    update = {"serving": cfg.serving.model_copy(update={"catalogue": str(data)})}
    if hasattr(cfg, "simulator"):
        update["simulator"] = cfg.simulator.model_copy(update={"data": str(data)})
    return cfg.model_copy(update=update)


def bootstrap(cfg: FlywheelConfig, data: Path, echo: Callable[[str], None], history=None) -> None:
    """Publish a first champion when there is none (backfill + one retrain, forced)."""
    from pipelines.batch.publish import champion

    current = champion(cfg)
    if current is not None:
        echo(f"champion: version {current.version} (trained for {current.tags.get('date', '?')})")
        return
    from flywheel import cli

    yesterday = (date.today() - timedelta(days=1)).isoformat()
    echo(f"no champion yet: backfill {data} as 14 days ending {yesterday}, then one daily retrain")
    cli.land(cfg, str(data), days=14, end_date=yesterday, negatives=4, history=history)
    cli.retrain(date=yesterday, mode="scratch", epochs=None, train_days=None, force_publish=True)


def start_joiner(cfg: FlywheelConfig, echo: Callable[[str], None]) -> None:
    from flywheel import flinkjobs, joiner_job

    if running := flinkjobs.running(cfg, joiner_job.job_name(cfg)):
        echo(f"joiner: running (job {running[0]})")
        return
    record = joiner_job.record(cfg)
    job = joiner_job.resume(cfg) if record.get("savepoint") else joiner_job.start(cfg)
    echo(f"joiner: started job {job}")


def where_to_look(cfg: FlywheelConfig) -> str:
    from flywheel import secrets
    from flywheel.stack import airflow

    h, key = cfg.stack.host, secrets.api_key(cfg)
    lines = [
        f"  demo page (live loop)    http://{h}:{cfg.serving.port}/demo" + (f"#key={key}" if key else ""),
        f"  feed API (OpenAPI docs)  http://{h}:{cfg.serving.port}/docs",
        f"  Flink UI (the joiner)    {cfg.flink_url}",
        f"  MLflow UI (runs, models) {cfg.mlflow_url}   experiments: {cfg.batch.experiment}, {cfg.online.experiment}",
        f"  Airflow UI (DAGs)        {cfg.airflow_url}",
        f"  metrics                  http://{h}:{cfg.serving.port}/metrics, http://{h}:{cfg.online.metrics_port}/metrics",
    ]
    if hasattr(cfg, "simulator"):
        lines[-1] += f", http://{h}:{cfg.simulator.metrics_port}/metrics (freshness)"
    if (airflow.home(cfg) / "passwords.json").exists():
        user, password = airflow.admin_credentials(cfg)
        lines.append(f"  Airflow login            {user} / {password}")
    user, password = secrets.mlflow_login(cfg)
    lines.append(f"  MLflow login             {user} / {password}")
    if flink_login := secrets.flink_auth(cfg):
        lines.append(f"  Flink login              {flink_login[0]} / {flink_login[1]}")
    return "\n".join(lines)


def watch(cfg: FlywheelConfig, seconds: float, echo: Callable[[str], None], every_s: float = 15) -> None:
    """Print the loop's figures every ``every_s`` for ``seconds``."""
    h = cfg.stack.host
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(every_s)
        server = scrape(f"http://{h}:{cfg.serving.port}/metrics/", timeout_s=3)
        online = scrape(f"http://{h}:{cfg.online.metrics_port}/metrics", timeout_s=3)
        sim = scrape(f"http://{h}:{cfg.simulator.metrics_port}/metrics", timeout_s=3) if hasattr(cfg, "simulator") else []
        feeds = value(server, "flywheel_serving_feed_requests_total", status="200")
        actions = value(server, "flywheel_serving_events_total", result="accepted")
        count, total = value(sim, "flywheel_freshness_seconds_count"), value(sim, "flywheel_freshness_seconds_sum")
        fresh = f"{total / count:.1f}s mean over {count:.0f} probes" if count else "no probe yet"
        auc = [s.value for s in online if s.name == "flywheel_online_rolling_auc" and s.labels.get("task") == "click"]
        echo(f"  feeds {feeds:.0f}, actions {actions:.0f}, examples trained "
             f"{value(online, 'flywheel_online_examples_total'):.0f} "
             f"({value(online, 'flywheel_online_examples_per_second'):.0f}/s, lag "
             f"{value(online, 'flywheel_online_consumer_lag'):.0f}), rolling AUC click "
             f"{auc[0] if auc else float('nan'):.3f}, freshness {fresh}")


def run(cfg: FlywheelConfig, data: Path | None, watch_s: float = 60, echo: Callable[[str], None] = print) -> None:
    """The whole demo (see the module docstring); the loop keeps running afterwards.

    ``data``: a history folder (None: ``data.path``, else the default data)."""
    import datasets
    from datasets.contract import ContractError
    from datasets.default import DataUnavailable
    from flywheel.stack import control

    try:
        data = datasets.resolve(data or cfg.data.path, cfg.data, echo).resolve()
        history = datasets.load(data, cfg.data.format, cfg.data.actions)
    except (FileNotFoundError, ContractError, DataUnavailable) as exc:
        raise StackError(f"{exc}\n(pass DATA=<folder> to make demo, or leave DATA empty for the default data)") from None
    echo(f"data: {data} ({len(history.items)} items, {history.events['user'].nunique()} users, "
         f"{len(history.events)} events{', with impressions' if history.has_impressions else ''})")
    cfg = with_data(cfg, data)
    bootstrap(cfg, data, echo, history)
    start_joiner(cfg, echo)
    control.up(cfg, only=LOOP, echo=echo)
    echo("The loop runs: simulator -> /feed + /events -> Kafka -> Flink joiner -> examples -> online trainer"
         " -> training PS -> serving PS -> /feed. Where to look:")
    echo(where_to_look(cfg))
    if watch_s > 0:
        watch(cfg, watch_s, echo)
    echo("It keeps running: 'make status' for health, 'make logs P=simulator' for a program's log, 'make down' to stop.")
