"""The smoke job: one batch of records crosses every service of the stack.

Kafka (produce) -> Flink (PyFlink passthrough job) -> Kafka (consume) -> HDFS (Parquet over
WebHDFS) -> Spark (read via hdfs://) -> MLflow (a run with each step's timing) -> Airflow
(the `stack_smoke` DAG, which itself crosses HDFS, MLflow and Spark).

`make demo` runs this until the real loop (serving, joiner, trainers) lands.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from flywheel import flinkjobs
from flywheel.config import REPO_ROOT, FlywheelConfig
from flywheel.hdfs import webhdfs
from flywheel.stack.base import StackError
from flywheel.secrets import kafka_args, tracking_uri

SOURCE, SINK = "smoke-in", "smoke-out"


def _end_offsets(cfg: FlywheelConfig, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(**kafka_args(cfg))
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not parts:
            raise StackError(f"topic {topic} does not exist: run 'make up' (it creates the configured topics)")
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def _produce(cfg: FlywheelConfig, run_id: str, rows: int) -> None:
    producer = KafkaProducer(**kafka_args(cfg), acks="all")
    for i in range(rows):
        record = {"run": run_id, "user_id": i % 17, "item_id": (i * 31) % 101, "ts": time.time()}
        producer.send(SOURCE, key=str(record["user_id"]).encode(), value=json.dumps(record).encode())
    producer.flush()
    producer.close()


def _consume(cfg: FlywheelConfig, run_id: str, rows: int, start: dict[int, int], timeout_s: float) -> list[dict]:
    consumer = KafkaConsumer(**kafka_args(cfg), enable_auto_commit=False,
                             consumer_timeout_ms=2000)
    parts = [TopicPartition(SINK, p) for p in start]
    consumer.assign(parts)
    for tp in parts:
        consumer.seek(tp, start[tp.partition])
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < rows and time.monotonic() < deadline:
        for msg in consumer:
            record = json.loads(msg.value)
            if record.get("run") == run_id:
                out.append(record)
    consumer.close()
    if len(out) != rows:
        raise StackError(f"smoke: {len(out)} of {rows} records came back from Flink on {SINK} within {timeout_s:.0f}s")
    return out


def _paramserver_round_trip(cfg: FlywheelConfig, timeout_s: float = 30) -> None:
    """Push to the training PS; wait until the serving PS has the same rows (via Kafka)."""
    import numpy as np

    from paramserver.client import PSClient

    table = next(iter(cfg.paramserver.tables))
    dim = cfg.paramserver.tables[table].dim
    ids = np.random.default_rng().integers(1, 2**63, 256, dtype=np.uint64)
    train, serve = PSClient.from_config(cfg, "training"), PSClient.from_config(cfg, "serving")
    try:
        for _ in range(cfg.paramserver.tables[table].admit_after):
            train.pull(table, ids, insert=True)
        train.push(table, ids, np.full((len(ids), dim), 0.1, np.float32))
        want = train.pull(table, ids)
        deadline = time.monotonic() + timeout_s
        while not np.array_equal(serve.pull(table, ids), want):
            if time.monotonic() > deadline:
                raise StackError(f"serving PS did not reflect a push to table {table!r} within {timeout_s:.0f}s")
            time.sleep(0.2)
    finally:
        train.close()
        serve.close()


def run_smoke(cfg: FlywheelConfig, rows: int = 500, with_airflow: bool = True, echo=print) -> dict[str, float]:
    """Run the smoke job; return seconds per step. Raises StackError naming the failing step."""
    run_id = uuid.uuid4().hex[:12]
    timings: dict[str, float] = {}

    @contextmanager
    def step(name: str):
        started = time.monotonic()
        echo(f"  {name} ...")
        try:
            yield
        except StackError:
            raise
        except Exception as exc:  # noqa: BLE001 - name the step that broke, keep the cause
            raise StackError(f"smoke step '{name}' failed: {type(exc).__name__}: {exc}") from exc
        timings[name] = time.monotonic() - started

    echo(f"smoke run {run_id}: {rows} records")
    with step("kafka produce"):
        src_start, sink_start = _end_offsets(cfg, SOURCE), _end_offsets(cfg, SINK)
        _produce(cfg, run_id, rows)
    with step("flink passthrough"):
        job = flinkjobs.submit(cfg, REPO_ROOT / "streaming/jobs/passthrough.py", [
            *flinkjobs.kafka_argv(cfg), "--source", SOURCE, "--sink", SINK,
            "--start-offsets", json.dumps({str(p): o for p, o in src_start.items()}),
        ])
        if flinkjobs.wait(cfg, job, timeout_s=300) != "FINISHED":
            raise StackError(f"Flink job {job} did not finish: {flinkjobs.exceptions(cfg, job)}")
    with step("kafka consume"):
        records = _consume(cfg, run_id, rows, sink_start, timeout_s=60)
    path = f"{cfg.hdfs.root}/smoke/demo/run={run_id}/part-0.parquet"
    with step("hdfs write"):
        fs = webhdfs(cfg)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(path, "wb") as f:
            pq.write_table(pa.Table.from_pylist(records), f)
    with step("spark read"):
        from flywheel.spark import spark_session

        spark = spark_session(cfg, "flywheel-smoke")
        try:
            counted = spark.read.parquet(f"{cfg.hdfs_uri}{path}").count()
        finally:
            spark.stop()
        if counted != rows:
            raise StackError(f"smoke: Spark read {counted} rows from {path}, expected {rows}")
    with step("mlflow log"):
        import mlflow

        mlflow.set_tracking_uri(tracking_uri(cfg))
        mlflow.set_experiment("smoke")
        with mlflow.start_run(run_name=f"smoke-{run_id}"):
            mlflow.log_params({"rows": rows, "run_id": run_id, "hdfs_path": path})
            mlflow.log_metrics({f"seconds_{k.replace(' ', '_')}": v for k, v in timings.items()})
    with step("paramserver sync"):
        _paramserver_round_trip(cfg)
    if with_airflow:
        with step("airflow dag"):
            from flywheel.airflow_client import AirflowClient

            client = AirflowClient.from_config(cfg)
            client.run_dag("stack_smoke", conf={"rows": 50}, timeout_s=600)
    for name, seconds in timings.items():
        echo(f"  {name:<18} {seconds:6.1f} s")
    echo(f"smoke ok: see {cfg.mlflow_url} (experiment 'smoke') and {cfg.airflow_url}")
    return timings
