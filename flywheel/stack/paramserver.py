"""Parameter servers in the local stack: a training and a serving PS process per shard."""

from __future__ import annotations

from flywheel.config import FlywheelConfig
from flywheel.stack.base import ML_PYTHON, Program, Service, require


def service(cfg: FlywheelConfig) -> Service:
    ps = cfg.paramserver
    flywheel_cli = ML_PYTHON.parent / "flywheel"
    programs = [
        Program(f"ps-{role}-{shard}", [str(flywheel_cli), "ps", role, "--shard", str(shard)], stop_wait_s=30,
                serves_requests=role == "serving")
        for role in ("training", "serving") for shard in range(ps.shards)
    ]

    def prepare() -> None:
        require(flywheel_cli, "the flywheel CLI (the .venv/ml environment)")

    def healthy() -> bool:
        from paramserver.client import PSClient

        for role in ("training", "serving"):
            client = PSClient.from_config(cfg, role=role)
            try:
                client.stats()
            finally:
                client.close()
        return True

    return Service(
        name="paramserver",
        url=f"grpc+tcp://{cfg.stack.host}:{ps.training_port} (training), :{ps.serving_port} (serving)",
        programs=programs,
        prepare=prepare,
        healthy=healthy,
        ports=[p for i in range(ps.shards) for p in (ps.training_port + i, ps.serving_port + i)],
        requires=["kafka", "hdfs"],
        start_after=["kafka", "hdfs"],  # a PS restores from HDFS and ships deltas to Kafka at start
    )
