"""What Kafka's TLS costs (kafka.tls): kafka-python, the client of the model server, the online
trainer and the parameter servers, against the same broker without TLS, measured in the same run.

Starts Kafka alone twice on the bench ports, one after the other, each in its own state dir under
``.flywheel-bench/``: first without TLS (SASL/PLAIN over plain TCP: the baseline), then with it.
Both have the SASL login and the ACLs; the client logs in as the super user. In each it times:

1. **Produce** ``--records`` records of ``--size`` bytes (acks=all, linger 5 ms, idempotent: the
   model server's settings): records per second until the last is acknowledged.
2. **Consume** them back (read_committed, as the trainer): records per second.
3. **A new client's first request**: a new consumer's metadata request (TCP, the TLS handshake,
   the SASL exchange), median of ``--fresh`` tries.

Run: ``make bench`` (or ``.venv/ml/bin/python bench/kafka_door.py``). What it started it stops.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("FLYWHEEL_CONFIG", "config/bench.yaml")

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402

from bench.report import Figure, report  # noqa: E402
from flywheel.config import load_config  # noqa: E402
from flywheel.secrets import kafka_args  # noqa: E402
from flywheel.stack import control  # noqa: E402

TOPIC = "bench-door"


def variant(tls: bool):
    state = load_config().stack.root / ("kafka-door-tls" if tls else "kafka-door-plain")
    return load_config(environ={**os.environ, "FLYWHEEL__STACK__STATE_DIR": str(state),
                                "FLYWHEEL__KAFKA__TLS": str(tls).lower()})


def measure(cfg, records: int, size: int, fresh: int) -> dict[str, float]:
    admin = KafkaAdminClient(**kafka_args(cfg))
    try:
        if TOPIC in admin.list_topics():
            admin.delete_topics([TOPIC])
            time.sleep(2)
        admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        admin.close()
    payload = os.urandom(size)
    producer = KafkaProducer(**kafka_args(cfg), acks="all", linger_ms=5, enable_idempotence=True)
    producer.partitions_for(TOPIC)  # metadata before the clock starts
    started = time.perf_counter()
    futures = [producer.send(TOPIC, payload) for _ in range(records)]
    producer.flush()
    produced = time.perf_counter() - started
    assert all(f.succeeded() for f in futures)
    producer.close()
    consumer = KafkaConsumer(**kafka_args(cfg), group_id=None, enable_auto_commit=False,
                             isolation_level="read_committed", max_partition_fetch_bytes=8 << 20)
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got, started = 0, time.perf_counter()
    while got < records:
        got += sum(len(batch) for batch in consumer.poll(timeout_ms=1000).values())
    consumed = time.perf_counter() - started
    consumer.close()
    firsts = []
    for _ in range(fresh):
        started = time.perf_counter()
        client = KafkaConsumer(**kafka_args(cfg), group_id=None)
        client.topics()
        firsts.append(time.perf_counter() - started)
        client.close()
    return {"produce": records / produced, "consume": records / consumed,
            "first_request_ms": statistics.median(firsts) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--fresh", type=int, default=15)
    args = parser.parse_args()
    results = {}
    for tls in (False, True):
        cfg = variant(tls)
        print(f"[bench] Kafka {'with' if tls else 'without'} TLS, state {cfg.stack.root}", flush=True)
        control.up(cfg, only=["kafka"], echo=lambda msg: print(f"[bench]   {msg}", flush=True))
        try:
            measure(cfg, 2000, args.size, 1)  # warm-up: JIT, first segment, first login
            results[tls] = measure(cfg, args.records, args.size, args.fresh)
        finally:
            control.down(cfg)
    plain, tls = results[False], results[True]
    report("kafka_door", [
        Figure(f"records produced ({args.size} B, acks=all), TLS", tls["produce"], "records/s", plain["produce"],
               "no TLS"),
        Figure(f"records consumed ({args.size} B, read_committed), TLS", tls["consume"], "records/s",
               plain["consume"], "no TLS"),
        Figure("a new client's first request, TLS", tls["first_request_ms"], "ms", plain["first_request_ms"],
               "no TLS", higher_is_better=False),
    ], notes={"records": args.records, "size": args.size, "fresh": args.fresh,
              "client": "kafka-python, SASL/PLAIN as the super user; ACLs on in both"})


if __name__ == "__main__":
    main()
