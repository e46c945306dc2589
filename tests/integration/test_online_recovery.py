"""kill -9 a training PS shard mid-stream: after restart and recovery the embeddings equal
those of an uninterrupted run fed the same examples (real Kafka, HDFS, PS processes)."""

import json
import signal
import threading
import time
import uuid

import numpy as np
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from test_paramserver import OWN_PORTS, Cluster

from flywheel.config import load_config
from flywheel.secrets import kafka_args
from flywheel.stack import kafka_acls
from paramserver.ledger import gaps_and_doubles
from pipelines.online.trainer import OnlineTrainer

pytestmark = pytest.mark.integration
# ~2.7 sightings per user with admit_after 3: at every snapshot many users are counted but not
# yet admitted, so the admission sketch must survive the restart for the replay to match
USERS = np.arange(1, 1501, dtype=np.uint64)


def step(examples, ps):
    """Logistic-regression-like step that reads the rows it updates, so a double or missing
    application anywhere changes every later gradient."""
    ids = np.array([e["user"] for e in examples], np.uint64)
    labels = np.array([e["label"] for e in examples], np.float32)
    w = ps.pull("emb", ids, insert=True)
    p = 1 / (1 + np.exp(-w.sum(axis=1)))
    grads = np.repeat(((p - labels) / 8)[:, None], 8, axis=1).astype(np.float32)
    return {"emb": (ids, grads)}


def make_cluster(stack, topic: str) -> Cluster:
    import os

    env = {**os.environ, **OWN_PORTS, "FLYWHEEL__PARAMSERVER__SHARDS": "2",
           "FLYWHEEL__PARAMSERVER__DELTAS_TOPIC": f"ps-deltas-{uuid.uuid4().hex[:8]}",
           "FLYWHEEL__PARAMSERVER__SNAPSHOT_DIR": f"/flywheel/it-snapshots/{uuid.uuid4().hex[:8]}",
           "FLYWHEEL__PARAMSERVER__TABLES": "{emb: {dim: 8, optimizer: adagrad, learning_rate: 0.1, initializer: zeros, admit_after: 3}}"}
    admin = KafkaAdminClient(**kafka_args(stack))
    admin.create_topics([NewTopic(env["FLYWHEEL__PARAMSERVER__DELTAS_TOPIC"], 2, 1)])
    admin.close()
    c = Cluster(env)
    kafka_acls.ensure(c.cfg)  # the parameter servers' grants on their own deltas topic
    kafka_acls.allow(c.cfg, {kafka_acls.Grant("trainer", "TOPIC", topic, "READ")})  # the trainer's examples
    for shard in (0, 1):
        c.start("training", shard)
    c.client("training")
    return c


def train(cluster: Cluster, topic: str, total: int, kill_at: int | None = None) -> tuple[np.ndarray, OnlineTrainer]:
    trainer = OnlineTrainer(cluster.cfg, step, topic=topic, batch_size=100, snapshot_every=1000)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (trainer.run(idle_exit_s=8), done.set()), daemon=True)
    thread.start()
    if kill_at is not None:
        while trainer.applied < kill_at:
            assert not done.is_set(), "the trainer finished before the kill"
            time.sleep(0.02)
        victim = cluster.procs[("training", 1)]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        cluster.start("training", 1)
    thread.join(timeout=300)
    assert done.is_set(), "the trainer did not finish"
    return trainer.ps.pull("emb", USERS), trainer


def test_kill_9_mid_stream_then_recover_equals_uninterrupted_run(stack):
    topic = f"examples-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(**kafka_args(stack))
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    rng = np.random.default_rng(5)
    producer = KafkaProducer(**kafka_args(stack))
    total = 4000
    for i in range(total):
        example = {"user": int(rng.choice(USERS)), "label": int(rng.random() < 0.3)}
        producer.send(topic, key=str(example["user"]).encode(), value=json.dumps(example).encode())
    producer.flush()

    clean = make_cluster(stack, topic)
    want, _ = train(clean, topic, total)
    clean.stop()

    crashy = make_cluster(stack, topic)
    got, trainer = train(crashy, topic, total, kill_at=2500)
    # the shards' ledgers: every offset since the rollback's snapshot applied once
    gaps, doubles = gaps_and_doubles(trainer.ps.stats(), topic, {int(p): o for p, o in trainer.position().items()})
    crashy.stop()
    assert gaps == [] and doubles == []
    assert trainer.recoveries >= 2  # the start, and the crash
    assert np.abs(want).sum() > 1, "the run learned nothing: the comparison would be empty"
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_published_batch_snapshot_is_where_the_trainer_continues(stack):
    """A batch model's snapshot, handed over after the trainer's own snapshot, wins at the next
    (re)start: its rows are kept and only examples after its data end are replayed."""
    from flywheel.hdfs import webhdfs
    from models.sparse import LocalTables
    from paramserver.handover import write_snapshot
    from paramserver.service import build_tables
    from paramserver.snapshots import latest_with_offsets, mark_published

    topic = f"examples-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(**kafka_args(stack))
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    data_end = int(time.time() * 1000) - 60_000
    producer = KafkaProducer(**kafka_args(stack))
    for i in range(600):  # 400 before the batch data ended, 200 after
        ts = data_end - 3_600_000 + i if i < 400 else data_end + i
        example = {"user": int(USERS[i % 50]), "label": i % 2}
        producer.send(topic, key=str(example["user"]).encode(), value=json.dumps(example).encode(), timestamp_ms=ts)
    producer.flush()

    cluster = make_cluster(stack, topic)
    try:
        tables = build_tables(cluster.cfg, "training")
        batch_only = np.array([99_001, 99_002], np.uint64)  # rows only the batch model has
        LocalTables(tables).tables["emb"].import_rows(batch_only, np.full((2, 8), 0.5, np.float32))
        fs, root = webhdfs(cluster.cfg), cluster.cfg.paramserver.snapshot_dir
        manifest = write_snapshot(fs, root, tables, 2, source={"test": "batch"})
        mark_published(fs, root, manifest["snapshot_id"], data_end, version="1")

        trainer = OnlineTrainer(cluster.cfg, step, topic=topic, batch_size=100, snapshot_every=10_000)
        trainer.run(idle_exit_s=5)
        assert trainer.applied == 200  # only the examples after the batch data's end
        np.testing.assert_array_equal(trainer.ps.pull("emb", batch_only), np.full((2, 8), 0.5, np.float32))
        own = latest_with_offsets(fs, root, topic)
        assert own is not None and own != manifest["snapshot_id"]  # a later crash comes back here...
        trainer.rollback()  # ...and does not replay the handover again
        assert trainer.position() == json.loads(fs.cat_file(f"{root}/{own}/_MANIFEST.json"))["shards"][0]["examples_offsets"][topic]
        offsets = json.loads(fs.cat_file(f"{root}/{own}/_MANIFEST.json"))["shards"][0]["examples_offsets"][topic]
        assert sum(offsets.values()) == 400  # the replay starts after the 400 older examples
    finally:
        cluster.stop()


def test_a_batch_with_nan_gradients_is_skipped_counted_and_left_unapplied(stack):
    """A poison batch (NaN gradients: the PS refuses them, a replay would too) is skipped and
    counted; training goes on, and the ledger shows exactly its offsets as not applied."""
    topic = f"examples-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(**kafka_args(stack))
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(**kafka_args(stack))
    for i in range(300):
        label = float("nan") if i == 150 else i % 2
        producer.send(topic, value=json.dumps({"user": int(USERS[i % 40]), "label": label}).encode())
    producer.flush()
    cluster = make_cluster(stack, topic)
    try:
        trainer = OnlineTrainer(cluster.cfg, step, topic=topic, batch_size=100, snapshot_every=10_000)
        trainer.run(idle_exit_s=5)
        assert trainer.poison_batches == 1 and 200 <= trainer.applied < 300  # all but the poison batch
        assert np.isfinite(trainer.ps.pull("emb", USERS[:40])).all()
        gaps, doubles = gaps_and_doubles(trainer.ps.stats(), topic, {0: trainer.position()["0"]})
        assert doubles == [] and len(gaps) == 1 and gaps[0]["offsets"][0] <= 150 < gaps[0]["offsets"][1]
    finally:
        cluster.stop()
