"""The online trainer as a long-running process: waits for a champion, trains on the examples
topic, logs a long-running MLflow run (rolling AUC per task, examples/s, consumer lag, PS
recoveries) in experiment ``online.experiment``."""

from __future__ import annotations

import logging
import time

from flywheel.config import FlywheelConfig

log = logging.getLogger(__name__)


def run_online(cfg: FlywheelConfig, stop=lambda: False, idle_exit_s: float | None = None) -> None:
    import mlflow

    from paramserver.client import PSClient
    from pipelines.online.learner import OnlineLearner
    from pipelines.online.trainer import OnlineTrainer
    from serving.loader import ChampionLoader

    o = cfg.online
    loader = ChampionLoader(cfg, PSClient.from_config(cfg, role="training"), interval_s=cfg.serving.reload_interval_s)
    while loader.current is None and not stop():
        try:
            loader.poll()
        except Exception as exc:  # MLflow not up yet
            log.warning("champion not readable yet: %s", exc)
        if loader.current is None:
            log.info("waiting for a champion model (run the daily retrain: make retrain)")
            time.sleep(10)
    if loader.current is None:
        return
    loader.start()
    learner = OnlineLearner(loader, train_dense=o.train_dense, window=o.window)
    trainer = OnlineTrainer(cfg, learner.step, topic=cfg.joiner.examples_topic, batch_size=o.batch_size,
                            snapshot_every=o.snapshot_every)
    mlflow.set_tracking_uri(cfg.mlflow_url)
    mlflow.set_experiment(o.experiment)

    def tick(t: OnlineTrainer) -> None:
        metrics = {**learner.metrics(), "consumer_lag": float(t.lag()), "recoveries": float(t.recoveries),
                   "bad_examples": float(t.bad_examples)}
        mlflow.log_metrics(metrics, step=int(learner.examples))
        log.info("online: %s", ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    with mlflow.start_run(run_name=f"online {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}"):
        mlflow.log_params({"champion_version": loader.current.version, **{f"online.{k}": v for k, v in o.model_dump().items()}})
        try:
            trainer.run(stop=stop, idle_exit_s=idle_exit_s, on_tick=tick, tick_s=o.log_every_s)
        finally:
            tick(trainer)
            loader.stop()
