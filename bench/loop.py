"""Closed-loop benchmark (issue 8): freshness, feed latency under load, online examples/s.

Each figure comes with a baseline measured in the same run.

Runs on the bench stack (config/bench.yaml: 2xxxx ports, state in .flywheel-bench): Kafka,
HDFS, Flink, MLflow and the parameter servers are started if they are not running (Airflow is
not needed and is left off: its scheduler would only compete for the 2 cores), a ``champion``
is bootstrapped as ``flywheel demo`` does (backfill + one forced retrain, only when there is
none), the Flink joiner is started unless it runs, then the supervised ``model-server``,
``online-trainer`` and ``simulator`` with ``--data`` as catalogue and population. What the
run started it stops again (the whole stack if it started it).

1. **Freshness** (target p99 <= 10 s): while the simulator drives traffic, ``--probes``
   probes (``simulator.freshness.probe_once``: a new probe user's like -> its row changed on
   the serving PS), one started every ``--probe-every`` s. Baseline, interleaved in the same
   window: the PS sync alone, a gradient pushed for a fresh ID straight to the training PS,
   then the serving PS polled (same poll period) until the row changed.
2. **Feed latency at ``--rps``** (target p99 <= 30 ms, ``serving.candidates`` candidates):
   an open-loop schedule (request i due at t0 + i/rps, latency from when it was due, so
   queueing counts) over loopback for ``--latency-s`` s, while the online trainer trains on
   the simulator's examples. Baseline: the same schedule with the online trainer stopped and
   no simulator traffic. A request still unsent ``--max-wait-s`` after it was due is dropped
   (counted as an error, its latency a lower bound), so a server slower than ``--rps`` shows
   latencies near ``--max-wait-s`` instead of a window that never ends; the feeds it answered
   per second are then the figure to read (served ok/s, same baseline). The notes hold the
   server's own ``flywheel_serving_feed_latency_seconds`` (retrieve/rank/total) over each
   window and a one-request-at-a-time sample (service time) after each.
3. **Online trainer examples/s** (target >= 5,000/s): ``--examples`` valid ``Example``s
   (MovieLens ratings + sampled impressions, keyed like the joiner keys them) on a fresh topic,
   trained in-process by ``OnlineTrainer`` + ``OnlineLearner`` (the champion over the training
   PS) from first to last batch, at batch sizes ``--batch-sizes``. Baseline: the same loop with
   a step that returns nothing (consume + JSON parse only). Optionally a cProfile of one run.

Run: ``make bench`` (or ``FLYWHEEL_CONFIG=config/bench.yaml .venv/ml/bin/python bench/loop.py``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("FLYWHEEL_CONFIG", "config/bench.yaml")

from kafka import KafkaAdminClient, KafkaProducer  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402

from bench.report import Figure, report  # noqa: E402
from flywheel import flinkjobs, joiner_job  # noqa: E402
from flywheel.config import REPO_ROOT, load_config  # noqa: E402
from flywheel.demo import with_data  # noqa: E402
from flywheel.prometheus import histogram_quantiles, scrape, value  # noqa: E402
from flywheel.secrets import flink_auth, kafka_args  # noqa: E402
from flywheel.stack import control, kafka_acls  # noqa: E402
from flywheel.stack.base import wait_until  # noqa: E402
from flywheel.stack.supervisor import Supervisor  # noqa: E402
from datasets import load as load_history  # noqa: E402 - pandas only, no TensorFlow
from paramserver.client import PSClient  # noqa: E402
from simulator.freshness import PROBE_BASE, probe_once  # noqa: E402

CORE = ["kafka", "hdfs", "flink", "mlflow", "paramserver"]  # what the loop needs (no Airflow)
LOOP = ["model-server", "online-trainer"]
POLL_S = 0.05  # serving PS poll period, as probe_once's default
SYNC_BASE = 8_000_000_000_000  # fresh user IDs of the PS-sync baseline (below the probes' range)


def echo(msg: str) -> None:
    print(msg, flush=True)


def pct(values, q: float, scale: float = 1.0) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q) * scale)


# -- the stack ------------------------------------------------------------------------------
def running_programs(cfg) -> set[str]:
    return {name for name, p in Supervisor(cfg).info().items() if p["statename"] in ("RUNNING", "STARTING")}


def wait_for(check, timeout_s: float, what: str, interval_s: float = 1.0) -> None:
    if not wait_until(check, timeout_s, interval_s):
        raise RuntimeError(f"{what} not within {timeout_s:.0f}s")


def champion_bootstrap(data: Path) -> None:
    """``flywheel.demo.bootstrap`` with the bench config, in a child process: its Spark JVM and
    TensorFlow must not stay in this one, which measures latencies."""
    code = ("import sys; from pathlib import Path; from flywheel.config import load_config; "
            "from flywheel.demo import bootstrap, with_data; data = Path(sys.argv[1]); "
            "bootstrap(with_data(load_config(), data), data, lambda m: print(m, flush=True))")
    subprocess.run([sys.executable, "-c", code, str(data)], cwd=REPO_ROOT, check=True,
                   env={**os.environ, "FLYWHEEL_CONFIG": os.environ["FLYWHEEL_CONFIG"]})


@contextmanager
def bench_stack(data_arg: str | None, sim_rate: float, name: str, phase=lambda name: None):
    """The bench stack with the closed loop running: Kafka, HDFS, Flink, MLflow and the
    parameter servers (started if they are not running), a ``champion`` (bootstrapped when
    there is none), the joiner, the model server and the online trainer over ``data_arg``'s
    history (``resolve_data``); the simulator's rate set to ``sim_rate`` for when it is
    started. Yields a namespace (cfg, data, data_source, url, champion, joiner); stops what it
    started (the whole stack if it started it)."""
    base = load_config()
    supervisor_was_up = Supervisor(base).running()
    before = running_programs(base)
    tmp = Path(tempfile.mkdtemp(prefix=f"flywheel-bench-{name}-"))
    data, data_source = resolve_data(data_arg, tmp)
    cfg = with_data(base, data)
    cfg = cfg.model_copy(update={"simulator": cfg.simulator.model_copy(update={"rate": sim_rate})})
    os.environ["FLYWHEEL__SIMULATOR__RATE"] = str(sim_rate)  # reaches the supervised simulator
    url = f"http://{cfg.stack.host}:{cfg.serving.port}"
    started_joiner = None
    try:
        control.up(cfg, only=CORE, echo=echo)
        phase("stack_up")
        champion_bootstrap(data)
        phase("champion")
        logging.getLogger().setLevel(logging.WARNING)  # kafka-python's INFO chatter
        from pipelines.batch.publish import champion

        current = champion(cfg)
        if running := flinkjobs.running(cfg, joiner_job.job_name(cfg)):
            echo(f"joiner: running (job {running[0]})")
        else:
            started_joiner = joiner_job.start(cfg)
            echo(f"joiner: started job {started_joiner}")
        control.up(cfg, only=LOOP, echo=echo)
        wait_for(lambda: requests.get(f"{url}/health", timeout=5).json()["model_version"], 180,
                 "the champion in the model server")
        yield SimpleNamespace(cfg=cfg, data=data, data_source=data_source, url=url,
                              champion={"version": current.version, "date": current.tags.get("date")},
                              joiner=started_joiner or running[0])
    finally:
        control.stop(cfg, [s for s in ["simulator", *LOOP] if s not in before])
        if started_joiner:
            joiner_job.cancel(cfg, started_joiner)
        if not supervisor_was_up:
            control.down(cfg)
        shutil.rmtree(tmp, ignore_errors=True)  # the synthetic data, if any


def checkpoint_stats(cfg, job: str) -> dict:
    """The joiner's checkpoint counts and end-to-end durations (ms) from Flink's REST API."""
    try:
        body = requests.get(f"{cfg.flink_url}/jobs/{job}/checkpoints", auth=flink_auth(cfg), timeout=5).json()
    except (requests.RequestException, ValueError) as exc:
        return {"error": str(exc)}
    return {"counts": body.get("counts"), "end_to_end_duration_ms": body.get("summary", {}).get("end_to_end_duration")}


def resolve_data(arg: str | None, tmp: Path) -> tuple[Path, str]:
    """The history folder and how it was chosen (given, else the default data, as make demo)."""
    if arg:
        return Path(arg).resolve(), "given"
    import datasets

    cfg = load_config()
    folder = datasets.resolve(cfg.data.path, cfg.data)
    return folder.resolve(), "default: " + folder.name


# -- 1. freshness ---------------------------------------------------------------------------
def freshness(cfg, url: str, probes: int, every_s: float, timeout_s: float) -> dict:
    """Probes of the whole loop, and PS-sync-alone samples interleaved in the same window."""
    local = threading.local()
    first_user = PROBE_BASE + 2 * 10**12 + int(time.time()) % 10**8 * 100

    def probe(n: int) -> float | None:
        if not hasattr(local, "ps"):
            local.ps, local.http = PSClient.from_config(cfg, role="serving"), requests.Session()
        try:
            return probe_once(local.http, url, local.ps, first_user + n, timeout_s=timeout_s, poll_s=POLL_S)
        except Exception as exc:  # noqa: BLE001 - counted, reported
            echo(f"  probe {n} failed: {exc}")
            return float("nan")

    sync: list[float] = []
    sync_timeouts = [0]
    stop = threading.Event()

    def sync_alone() -> None:
        train, serve = PSClient.from_config(cfg, role="training"), PSClient.from_config(cfg, role="serving")
        table = cfg.paramserver.tables["user_id"]
        ids = np.uint64(SYNC_BASE + int(time.time()) % 10**8 * 1000) + np.arange(probes, dtype=np.uint64)
        for _ in range(table.admit_after):
            train.pull("user_id", ids, insert=True)
        # the admitted rows ship with a sync: wait until serving holds them, so that each sample
        # below times a gradient, not the admission
        wait_for(lambda: np.array_equal(serve.pull("user_id", ids), train.pull("user_id", ids)), 60,
                 "serving PS holding the admitted sync-baseline rows", 0.1)
        rng = np.random.default_rng(1)
        grad = (rng.standard_normal((1, table.dim)) * 0.05).astype(np.float32)
        for i in range(probes):
            if stop.is_set():
                break
            one = ids[i:i + 1]
            before = np.array(serve.pull("user_id", one)[0], copy=True)
            started = time.monotonic()
            train.push("user_id", one, grad)
            while time.monotonic() - started < timeout_s:
                if not np.array_equal(serve.pull("user_id", one)[0], before):
                    sync.append(time.monotonic() - started)
                    break
                time.sleep(POLL_S)
            else:
                sync_timeouts[0] += 1
            time.sleep(every_s * rng.uniform(0.5, 1.5))  # any phase against the sync ticks
        train.close()
        serve.close()

    failed: list[BaseException] = []

    def sync_guarded() -> None:
        try:
            sync_alone()
        except Exception as exc:  # noqa: BLE001 - raised below, in the caller's thread
            failed.append(exc)

    sync_thread = threading.Thread(target=sync_guarded, name="sync-baseline", daemon=True)
    sync_thread.start()
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe") as pool:
        futures, t0 = [], time.monotonic()
        for n in range(probes):
            time.sleep(max(0.0, t0 + n * every_s - time.monotonic()))
            futures.append(pool.submit(probe, n))
        results = [f.result() for f in futures]
    sync_thread.join(timeout=probes * every_s * 2 + 120)
    stop.set()
    if failed or not sync:
        raise RuntimeError(f"the PS-sync baseline took no sample: {failed[0] if failed else 'timeouts only'}")
    fresh = [r for r in results if r is not None and r == r]
    if not fresh:
        raise RuntimeError(f"no freshness probe succeeded ({sum(r is None for r in results)} timed out)")
    timeouts = sum(r is None for r in results)
    return {"fresh": fresh, "timeouts": timeouts, "percentiles_of": fresh + [timeout_s] * timeouts,
            "errors": sum(r is not None and r != r for r in results), "sync": sync, "sync_timeouts": sync_timeouts[0]}


# -- 2. feed latency ------------------------------------------------------------------------
def open_loop(url: str, users: list[int], rps: float, duration_s: float, warmup_s: float = 5.0,
              max_wait_s: float = 10.0, threads: int = 16, k: int = 10) -> dict:
    """Open-loop GET /feed at ``rps``: latency (s) from each request's scheduled time to its
    answer, so queueing counts; the first ``warmup_s`` seconds are not counted. A request still
    unsent ``max_wait_s`` after it was due is dropped (its latency is then a lower bound, and
    it counts as an error): a saturated server would otherwise make the window last for ever."""
    n_warm, n = int(rps * warmup_s), int(rps * (warmup_s + duration_s))
    latency, done, ok, dropped = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool), np.zeros(n, bool)
    local = threading.local()
    rng = random.Random(7)
    who = [rng.choice(users) for _ in range(n)]

    def one(i: int, due: float) -> None:
        if not hasattr(local, "http"):
            local.http = requests.Session()
        if time.perf_counter() - due > max_wait_s:
            dropped[i] = True
        else:
            try:
                got = local.http.get(f"{url}/feed", params={"user_id": who[i], "k": k}, timeout=max_wait_s)
                ok[i] = got.status_code == 200
            except requests.RequestException:
                pass
        done[i] = time.perf_counter()
        latency[i] = done[i] - due

    late = 0
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="feed") as pool:
        t0 = time.perf_counter() + 0.2
        for i in range(n):
            due = t0 + i / rps
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            elif wait < -0.005:
                late += 1  # the generator itself fell behind (the latency still counts from `due`)
            pool.submit(one, i, due)
    m = slice(n_warm, n)
    return {"latency": latency[m], "errors": int((~ok[m]).sum()), "dropped": int(dropped[m].sum()),
            "requests": n - n_warm, "generator_late": late,
            "served_ok_per_s": float(ok.sum() / (np.nanmax(done) - t0))}  # warm-up included: the server's throughput


def serial(url: str, users: list[int], n: int = 60, k: int = 10) -> dict:
    """One request at a time (no queueing): the server's service time, ms."""
    http, rng, out = requests.Session(), random.Random(3), []
    for i in range(n + 10):
        started = time.perf_counter()
        http.get(f"{url}/feed", params={"user_id": rng.choice(users), "k": k}, timeout=30).raise_for_status()
        out.append(time.perf_counter() - started)
    out = out[10:]
    return {"requests": n, "p50_ms": pct(out, 50, 1e3), "p99_ms": pct(out, 99, 1e3), "mean_ms": float(np.mean(out) * 1e3),
            "max_rps_one_at_a_time": float(1 / np.mean(out))}


def cpu_seconds(cfg) -> dict[str, float]:
    """CPU seconds used so far by each supervised program (with its children), this benchmark
    process (the load generator) and the whole machine (``machine_busy``)."""
    procs = {name: info["pid"] for name, info in Supervisor(cfg).info().items() if info.get("pid")}
    procs["bench client"] = os.getpid()
    out = {}
    for name, pid in procs.items():
        try:
            proc = psutil.Process(pid)
            family = [proc] + (proc.children(recursive=True) if name != "bench client" else [])
            out[name] = sum(sum(p.cpu_times()[:2]) for p in family)
        except psutil.Error:  # it exited meanwhile
            continue
    machine = psutil.cpu_times()
    out["machine_busy"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    return out


def cpu_shares(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores used on average over a window, per program (largest first)."""
    used = {k: round((after[k] - before[k]) / seconds, 2) for k in after if k in before}
    return dict(sorted(used.items(), key=lambda kv: -kv[1]))


def feed_window(cfg, url: str, users: list[int], args) -> dict:
    server = f"{url}/metrics/"
    trainer = f"http://{cfg.stack.host}:{cfg.online.metrics_port}/metrics"
    before, trained_before = scrape(server), value(scrape(trainer), "flywheel_online_examples_total")
    started, cpu_before = time.monotonic(), cpu_seconds(cfg)
    out = open_loop(url, users, args.rps, args.latency_s, max_wait_s=args.max_wait_s)
    out["seconds"] = time.monotonic() - started
    out["cores_used"] = cpu_shares(cpu_before, cpu_seconds(cfg), out["seconds"])  # of psutil.cpu_count()
    after = scrape(server)
    out["server"] = histogram_quantiles(before, after, "flywheel_serving_feed_latency_seconds", "stage")
    out["trainer_examples"] = value(scrape(trainer), "flywheel_online_examples_total") - trained_before
    out["serial"] = serial(url, users)  # after the window: the service time under the same background
    out["feeds_200"] = (value(after, "flywheel_serving_feed_requests_total", status="200")
                        - value(before, "flywheel_serving_feed_requests_total", status="200"))
    return out


# -- 3. online trainer ----------------------------------------------------------------------
def example_backlog(cfg, data: Path, n: int) -> tuple[str, int]:
    """A fresh topic holding ``n`` valid examples (the latest events of ``data``, with 4 sampled
    negatives each without impressions, event times of now), keyed by user like the joiner's;
    returns its name."""
    from datasets.history import examples
    from models.features import HISTORY
    from streaming.schemas import TASKS, Example, encode, key_of

    history = load_history(data)
    latest = history.events.tail(n // 5 + 1 if not history.has_impressions else n)
    prior = history.events.iloc[:-len(latest)]
    rows = examples(history, latest, negatives=4, history=HISTORY, prior=prior)[:n]
    now = int(time.time() * 1000) - len(rows)
    topic = f"bench-examples-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(**kafka_args(cfg))
    admin.create_topics([NewTopic(topic, cfg.kafka.topics["examples"].partitions, 1)])
    admin.close()
    kafka_acls.allow(cfg, {kafka_acls.Grant("trainer", "TOPIC", topic, "READ")})  # the trainer's own login reads it
    producer = KafkaProducer(**kafka_args(cfg), linger_ms=20, batch_size=256 * 1024)
    for i, row in enumerate(rows):
        row.update(schema_version=1, event_time=now + i, model_version="bench", join_delay_ms=1000,
                   labels={t: int(row["labels"].get(t, 0)) for t in TASKS})
        example = Example.model_validate(row)  # strict: the trainer gets what the joiner would write
        producer.send(topic, key=key_of(example), value=encode(example))
    producer.flush()
    producer.close()
    return topic, len(rows)


def trainer_rate(cfg, topic: str, total: int, batch_size: int, step, profile: cProfile.Profile | None = None,
                 on_rollback=None) -> dict:
    """Examples/s of an in-process OnlineTrainer over the whole topic, first to last batch
    (built as pipelines/online/run.py builds it, on ``topic``)."""
    from pipelines.online.trainer import OnlineTrainer

    trainer = OnlineTrainer(cfg, step, topic=topic, batch_size=batch_size, snapshot_every=cfg.online.snapshot_every,
                            on_rollback=on_rollback)
    batches: list[tuple[float, int]] = []
    started = time.monotonic()
    try:
        if profile:
            profile.enable()
        trainer.run(idle_exit_s=2, on_batch=lambda examples: batches.append((time.perf_counter(), len(examples))))
    finally:
        if profile:
            profile.disable()
        trainer.consumer.close()
        trainer.ps.close()
    seen = sum(n for _, n in batches)
    if seen != total or len(batches) < 3:
        raise RuntimeError(f"the trainer read {seen}/{total} examples in {len(batches)} batches from {topic}")
    (t_first, _), (t_last, _) = batches[0], batches[-1]
    return {"rate": sum(n for _, n in batches[1:]) / (t_last - t_first), "batches": len(batches),
            "examples": seen, "seconds_first_to_last": t_last - t_first, "run_s": time.monotonic() - started}


def online_trainer(cfg, data: Path, args) -> dict:
    from pipelines.online.learner import OnlineLearner
    from serving.loader import ChampionLoader

    topic, total = example_backlog(cfg, data, args.examples)
    echo(f"  {total} examples on {topic}")
    loader = ChampionLoader(cfg, PSClient.from_config(cfg, role="training"))
    loader.poll()
    out: dict = {"topic": topic, "examples": total, "champion": loader.current.version, "model": {}, "baseline": {}}
    # the backlog holds final examples (no provisional negatives): trained as they are ("wait")
    for bs in args.batch_sizes:
        learner = OnlineLearner(loader, train_dense=cfg.online.train_dense, window=cfg.online.window,
                                delayed_feedback="wait")
        out["model"][bs] = trainer_rate(cfg, topic, total, bs, learner.step, on_rollback=learner.forget)
        out["model"][bs]["rolling_auc"] = {k: v for k, v in learner.metrics().items() if k.startswith("rolling_auc")}
        echo(f"  batch {bs}: {out['model'][bs]['rate']:.0f} examples/s (model)")
        out["baseline"][bs] = trainer_rate(cfg, topic, total, bs, lambda examples, ps: {})
        echo(f"  batch {bs}: {out['baseline'][bs]['rate']:.0f} examples/s (consume + parse only)")
    if args.profile:
        profile = cProfile.Profile()
        learner = OnlineLearner(loader, train_dense=cfg.online.train_dense, window=cfg.online.window,
                                delayed_feedback="wait")
        trainer_rate(cfg, topic, total, args.batch_sizes[0], learner.step, profile, on_rollback=learner.forget)
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
        out["profile_tottime_top25"] = [line for line in text.getvalue().splitlines() if line.strip()][-26:]
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(40)
        out["profile_cumulative_top40"] = [line for line in text.getvalue().splitlines() if line.strip()][-41:]
    admin = KafkaAdminClient(**kafka_args(cfg))
    admin.delete_topics([topic])
    admin.close()
    return out


# -- the run --------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a history folder (default: the default data, as make demo)")
    parser.add_argument("--sim-rate", type=float, default=5, help="simulator feed requests/s (FLYWHEEL__SIMULATOR__RATE: reaches the "
                        "supervised simulator when this run starts the stack's supervisord)")
    parser.add_argument("--warmup-s", type=float, default=20, help="simulator traffic before the first probe")
    parser.add_argument("--probes", type=int, default=30, help="freshness probes (and PS-sync samples)")
    parser.add_argument("--probe-every", type=float, default=2.0, help="seconds between probe starts")
    parser.add_argument("--probe-timeout", type=float, default=60.0)
    parser.add_argument("--rps", type=float, default=50, help="feed requests/s of the latency schedule")
    parser.add_argument("--latency-s", type=float, default=60, help="seconds per latency window")
    parser.add_argument("--max-wait-s", type=float, default=10,
                        help="a feed request not sent this long after it was due is dropped (counted)")
    parser.add_argument("--examples", type=int, default=20_000, help="examples in the trainer backlog")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="cProfile one trainer run at the first batch size (into the notes)")
    args = parser.parse_args()
    began = time.monotonic()
    notes: dict = {}
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - began, 1)
    with bench_stack(args.data, args.sim_rate, "loop", phase) as run:
        cfg, data, url = run.cfg, run.data, run.url
        notes.update({"data": str(data), "data_source": run.data_source, "champion": run.champion})
        trainer_url = f"http://{cfg.stack.host}:{cfg.online.metrics_port}/metrics"
        wait_for(lambda: value(scrape(trainer_url), "flywheel_online_champion_version") > 0, 240,
                 "the online trainer on the champion")
        users = sorted({int(u) for u in load_history(data).events["user"]})

        echo(f"simulator at {args.sim_rate}/s; {args.warmup_s:.0f}s of traffic, then {args.probes} freshness probes")
        phase("loop_up")
        control.up(cfg, only=["simulator"], echo=echo)
        time.sleep(args.warmup_s)
        sim_url = f"http://{cfg.stack.host}:{cfg.simulator.metrics_port}/metrics"
        sim0 = scrape(sim_url)
        fresh = freshness(cfg, url, args.probes, args.probe_every, args.probe_timeout)
        echo(f"  freshness p50 {pct(fresh['percentiles_of'], 50):.2f}s p99 {pct(fresh['percentiles_of'], 99):.2f}s "
             f"({len(fresh['fresh'])} fresh, {fresh['timeouts']} timeouts); PS sync alone p50 "
             f"{pct(fresh['sync'], 50):.2f}s p99 {pct(fresh['sync'], 99):.2f}s")

        phase("freshness")
        notes["joiner_checkpoints"] = checkpoint_stats(cfg, run.joiner)
        forward = requests.get(f"{url}/health", timeout=5).json().get("forward")
        echo(f"feed latency: {args.rps:.0f} rps open loop for {args.latency_s:.0f}s, trainer busy "
             f"(dense graphs served by {forward})")
        busy = feed_window(cfg, url, users, args)
        sim1 = scrape(sim_url)
        echo(f"  p50 {pct(busy['latency'], 50, 1e3):.1f} ms p99 {pct(busy['latency'], 99, 1e3):.1f} ms, "
             f"{busy['errors']} errors ({busy['dropped']} dropped), {busy['served_ok_per_s']:.1f} ok/s; trainer trained "
             f"{busy['trainer_examples']:.0f} examples meanwhile; one at a time: {busy['serial']['p50_ms']:.0f} ms p50")
        echo(f"  cores used: {busy['cores_used']}")
        control.stop(cfg, ["simulator", "online-trainer"])
        time.sleep(5)
        echo(f"feed latency: {args.rps:.0f} rps open loop for {args.latency_s:.0f}s, trainer stopped, no simulator")
        idle = feed_window(cfg, url, users, args)
        echo(f"  p50 {pct(idle['latency'], 50, 1e3):.1f} ms p99 {pct(idle['latency'], 99, 1e3):.1f} ms, "
             f"{idle['errors']} errors ({idle['dropped']} dropped), {idle['served_ok_per_s']:.1f} ok/s; one at a time: "
             f"{idle['serial']['p50_ms']:.0f} ms p50")
        echo(f"  cores used: {idle['cores_used']}")

        phase("feed_latency")
        echo(f"online trainer in-process: {args.examples} examples, batch sizes {args.batch_sizes}")
        online = online_trainer(cfg, data, args)
        phase("online_trainer")
    phase("stopped")

    runtime = time.monotonic() - began
    lat = lambda w, q: pct(w["latency"], q, 1e3)  # noqa: E731
    figures = [
        Figure("freshness p50 (action -> serving PS)", pct(fresh["percentiles_of"], 50), "s", pct(fresh["sync"], 50),
               "PS sync alone p50", higher_is_better=False),
        Figure("freshness p99 (action -> serving PS)", pct(fresh["percentiles_of"], 99), "s", pct(fresh["sync"], 99),
               "PS sync alone p99", higher_is_better=False),
        Figure(f"feed p50 @{args.rps:.0f} rps, trainer busy", lat(busy, 50), "ms", lat(idle, 50),
               "trainer stopped, no sim", higher_is_better=False),
        Figure(f"feed p99 @{args.rps:.0f} rps, trainer busy", lat(busy, 99), "ms", lat(idle, 99),
               "trainer stopped, no sim", higher_is_better=False),
        Figure(f"feed served ok/s @{args.rps:.0f} rps offered, busy", busy["served_ok_per_s"], "feeds/s",
               idle["served_ok_per_s"], "trainer stopped, no sim"),
        *(Figure(f"online trainer examples/s, batch {bs}", online["model"][bs]["rate"], "examples/s",
                 online["baseline"][bs]["rate"], "consume + JSON parse only") for bs in args.batch_sizes),
    ]
    sim_delta = {k: value(sim1, k) - value(sim0, k) for k in (
        "flywheel_simulator_feed_requests_total", "flywheel_simulator_actions_total",
        "flywheel_freshness_seconds_count", "flywheel_freshness_seconds_sum")}

    def window(w):
        return {"requests": w["requests"], "errors": w["errors"], "dropped_after_max_wait": w["dropped"],
                "max_wait_s": args.max_wait_s, "seconds": round(w["seconds"], 1),
                "generator_late": w["generator_late"], "feeds_200_server": w["feeds_200"],
                "served_ok_per_s": round(w["served_ok_per_s"], 1), "serial_after_window": w["serial"],
                "p50_ms": lat(w, 50), "p90_ms": lat(w, 90), "p99_ms": lat(w, 99), "max_ms": lat(w, 100),
                "server_side": w["server"], "online_trainer_examples_trained": w["trainer_examples"],
                "cores_used": w["cores_used"], "cores": psutil.cpu_count()}

    notes.update({
        "runtime_s": round(runtime, 1), "phase_done_at_s": phases,
        "freshness": {"probes": args.probes, "probe_every_s": args.probe_every, "fresh": len(fresh["fresh"]),
                      "timeouts": fresh["timeouts"], "errors": fresh["errors"],
                      "timeouts_counted_as_s": args.probe_timeout,
                      "samples_s": [round(x, 3) for x in fresh["fresh"]],
                      "sync_samples_s": [round(x, 3) for x in fresh["sync"]], "sync_timeouts": fresh["sync_timeouts"],
                      "simulator_rate_per_s": args.sim_rate, "simulator_in_probe_and_busy_windows": sim_delta,
                      "checkpoint_interval_s": cfg.flink.checkpoint_interval_s,
                      "sync_interval_s": cfg.paramserver.sync_interval_s, "joiner_delivery": cfg.joiner.delivery},
        "feed_latency": {"rps": args.rps, "k": 10, "candidates": cfg.serving.candidates, "users": len(users),
                         "forward": forward, "candidate_rows_refresh_s": cfg.serving.candidate_rows_refresh_s,
                         "busy": window(busy), "idle": window(idle)},
        "online_trainer": {"examples": online["examples"], "champion": online["champion"],
                           "snapshot_every": cfg.online.snapshot_every, "train_dense": cfg.online.train_dense,
                           "model": online["model"], "baseline": online["baseline"],
                           **{k: v for k, v in online.items() if k.startswith("profile")}},
        "targets": {"freshness_p99_s": 10, "feed_p99_ms_at_50rps": 30, "online_examples_per_s": 5000},
        "machine_note": "2 cores shared with the test stack (config/test.yaml) when it runs",
    })
    path = report("loop", figures, notes)
    print(f"wrote {path} ({runtime:.0f} s)")


if __name__ == "__main__":
    main()
