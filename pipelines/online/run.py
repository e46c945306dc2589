"""The online trainer as a long-running process: waits for a champion, trains on the examples
topic, exposes Prometheus metrics (pipelines/online/metrics.py) from the start, and logs a
long-running MLflow run (rolling AUC per task, examples/s, consumer lag, PS recoveries) in
experiment ``online.experiment`` every ``online.log_every_s``. ``stop()`` (SIGTERM in
``flywheel online-train``) ends it after the current batch and closes the run."""

from __future__ import annotations

import logging
import time

from flywheel.config import FlywheelConfig
from flywheel.secrets import tracking_uri

log = logging.getLogger(__name__)
METRICS_TICK_S = 1.0  # Prometheus figures are refreshed this often (MLflow: online.log_every_s)


def wait_for_champion(cfg: FlywheelConfig, loader, stop) -> bool:
    """Poll MLflow until the ``champion`` alias names a model; False if stopped first."""
    while loader.current is None and not stop():
        try:
            loader.poll()
        except Exception as exc:  # MLflow not up yet
            log.warning("champion not readable yet: %s", exc)
        if loader.current is None:
            log.info("waiting for a champion model (run the daily retrain: make retrain)")
            for _ in range(20):
                if stop():
                    break
                time.sleep(0.5)
    return loader.current is not None


def run_online(cfg: FlywheelConfig, stop=lambda: False, idle_exit_s: float | None = None,
               serve_metrics: bool = True) -> None:
    import mlflow

    from paramserver.client import PSClient
    from pipelines.online.learner import OnlineLearner
    from pipelines.online.metrics import OnlineMetrics
    from pipelines.online.trainer import OnlineTrainer
    from serving.loader import ChampionLoader

    o = cfg.online
    metrics = OnlineMetrics()
    if serve_metrics:
        metrics.serve(cfg.stack.bind, o.metrics_port)
    loader = ChampionLoader(cfg, PSClient.from_config(cfg, role="training"), interval_s=cfg.serving.reload_interval_s)
    if not wait_for_champion(cfg, loader, stop):
        return
    loader.start()
    learner = OnlineLearner(loader, train_dense=o.train_dense, window=o.window,
                            reference_batch=cfg.batch.batch_size if o.step_scale == "batch" else None,
                            personal_tables=tuple(o.personal_tables), delayed_feedback=o.delayed_feedback)
    trainer = OnlineTrainer(cfg, learner.step, topic=cfg.joiner.examples_topic, batch_size=o.batch_size,
                            snapshot_every=o.snapshot_every,
                            on_rollback=lambda: (learner.forget(), metrics.positions(trainer.covered)))
    mlflow.set_tracking_uri(tracking_uri(cfg))
    mlflow.set_experiment(o.experiment)
    last_log = [time.monotonic()]

    def tick(t: OnlineTrainer, force: bool = False) -> None:
        figures = learner.metrics()
        lag = t.lag()
        metrics.update(figures, lag, t.recoveries, t.bad_examples, t.poison_batches)
        metrics.champion.set(float(loader.current.version) if loader.current.version.isdigit() else 0)
        if force or time.monotonic() - last_log[0] >= o.log_every_s:
            last_log[0] = time.monotonic()
            row = {**figures, "consumer_lag": float(lag), "recoveries": float(t.recoveries),
                   "bad_examples": float(t.bad_examples)}
            try:
                mlflow.log_metrics(row, step=int(learner.examples))
            except Exception as exc:  # MLflow down: training goes on; the figures are in /metrics
                log.warning("MLflow did not take the metrics: %s", exc)
            log.info("online: %s", ", ".join(f"{k} {v:.4g}" for k, v in row.items()))

    with mlflow.start_run(run_name=f"online {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}"):
        mlflow.log_params({"champion_version": loader.current.version, "serving.traffic": str(cfg.serving.traffic),
                           **{f"online.{k}": v for k, v in o.model_dump().items()}})
        try:
            trainer.run(stop=stop, idle_exit_s=idle_exit_s, on_tick=tick, tick_s=METRICS_TICK_S,
                        on_batch=lambda _: metrics.batch_pushed(trainer.covered))
        finally:
            tick(trainer, force=True)
            loader.stop()
