"""The closed loop's long-running processes, supervised like the rest of the stack but started
on demand (``flywheel demo``, or ``flywheel up --only model-server`` ...), not by a bare ``up``:

- ``model-server``: ``flywheel serve`` (feed API, event collector, /metrics);
- ``online-trainer``: ``flywheel online-train`` (examples -> training PS; /metrics);
- ``simulator``: ``flywheel simulate`` (a history's users requesting feeds and acting on them);
- ``joiner-keeper``: ``flywheel joiner keep`` (resubmits the Flink joiner when its JobManager
  lost it; see flywheel/joiner_job.py).

A history folder configured as ``serving.catalogue`` / ``simulator.data`` is passed to the
programs' environment, so a value given to ``flywheel demo`` reaches the supervised processes.
"""

from __future__ import annotations

from flywheel.config import FlywheelConfig
from flywheel import joiner_job
from flywheel.stack.base import ML_PYTHON, Program, Service, http_json, port_open, require

FLYWHEEL_CLI = ML_PYTHON.parent / "flywheel"


def _env(cfg: FlywheelConfig) -> dict[str, str]:
    env = {"PYTHONUNBUFFERED": "1"}
    if cfg.serving.catalogue:
        env["FLYWHEEL__SERVING__CATALOGUE"] = str(cfg.serving.catalogue)
    simulator = getattr(cfg, "simulator", None)
    if simulator is not None and getattr(simulator, "data", None):
        env["FLYWHEEL__SIMULATOR__DATA"] = str(simulator.data)
    return env


def _prepare() -> None:
    require(FLYWHEEL_CLI, "the flywheel CLI (the .venv/ml environment)")


def services(cfg: FlywheelConfig) -> list[Service]:
    host, env = cfg.stack.host, _env(cfg)
    serving = Service(
        name="model-server",
        url=f"http://{host}:{cfg.serving.port}/docs",
        programs=[Program("model-server", [str(FLYWHEEL_CLI), "serve"], env=env, stop_wait_s=15,
                                  serves_requests=True)],
        prepare=_prepare,
        healthy=lambda: http_json(f"http://{host}:{cfg.serving.port}/health") is not None,
        ports=[cfg.serving.port],
        requires=["kafka", "mlflow", "paramserver"],
        start_after=["kafka", "mlflow", "paramserver"],
        on_demand=True,
    )
    trainer = Service(
        name="online-trainer",
        url=f"http://{host}:{cfg.online.metrics_port}/metrics",
        programs=[Program("online-trainer", [str(FLYWHEEL_CLI), "online-train"], env=env, stop_wait_s=60)],
        prepare=_prepare,
        healthy=lambda: port_open(host, cfg.online.metrics_port),
        ports=[cfg.online.metrics_port],
        requires=["kafka", "hdfs", "mlflow", "paramserver"],
        start_after=["kafka", "hdfs", "mlflow", "paramserver"],
        on_demand=True,
    )
    keeper = Service(
        name="joiner-keeper",
        url=cfg.flink_url,
        programs=[Program("joiner-keeper", [str(FLYWHEEL_CLI), "joiner", "keep"], env=env, stop_wait_s=10)],
        prepare=_prepare,
        healthy=lambda: joiner_job.Keeper.beating(cfg),
        ports=[],
        requires=["flink", "hdfs"],
        start_after=["flink", "hdfs"],
        on_demand=True,
    )
    out = [serving, trainer, keeper]
    simulator = getattr(cfg, "simulator", None)
    if simulator is not None:
        out.append(Service(
            name="simulator",
            url=f"http://{host}:{simulator.metrics_port}/metrics",
            programs=[Program("simulator", [str(FLYWHEEL_CLI), "simulate"], env=env, stop_wait_s=15)],
            prepare=_prepare,
            healthy=lambda: port_open(host, simulator.metrics_port),
            ports=[simulator.metrics_port],
            requires=["model-server"],
            start_after=["model-server"],
            on_demand=True,
        ))
    return out
