"""`flywheel` command line: the local stack (up, down, status, logs) and the smoke job."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from typing import Annotated, Optional

import typer

from flywheel.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def friendly(fn):
    """Turn the errors we expect (bad config, stack problems, data that breaks the contract or
    cannot be fetched) into one clear message, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from flywheel.stack.base import StackError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, StackError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        except (ValueError, RuntimeError) as exc:
            from datasets.contract import ContractError
            from datasets.default import DataUnavailable

            if not isinstance(exc, (ContractError, DataUnavailable)):
                raise
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@friendly
def up(only: Annotated[Optional[list[str]], typer.Option(help="start only these services (and what they need)")] = None):
    """Start the local stack (Kafka, HDFS, Flink, MLflow, Airflow) and wait until healthy."""
    from flywheel.stack import control

    cfg = load_config()
    control.up(cfg, only=only, echo=typer.echo)
    _print_status(cfg)


@app.command()
@friendly
def down():
    """Stop every service of the stack (data stays in the state dir)."""
    from flywheel.stack import control

    cfg = load_config()
    typer.echo("stopped" if control.down(cfg) else "nothing was running")


@app.command()
@friendly
def status():
    """Show each service: health, URL, programs and memory; Airflow's admin login."""
    cfg = load_config()
    if not _print_status(cfg):
        raise typer.Exit(1)


def _print_status(cfg) -> bool:
    from flywheel import secrets
    from flywheel.stack import airflow, control

    rows = control.status(cfg)
    typer.echo(f"{'service':<16}{'health':<9}{'RSS MiB':>8}  {'url':<48} programs")
    for r in rows:
        progs = " ".join(f"{n}={s}" for n, s in r.programs.items())
        word, color = ("ok", typer.colors.GREEN) if r.healthy else ("off", None) if r.off else ("DOWN", typer.colors.RED)
        health = typer.style(word, fg=color)
        typer.echo(f"{r.name:<16}{health:<18}{r.rss_mib:>8.0f}  {r.url:<48} {progs}")
    typer.echo(f"{'total':<25}{sum(r.rss_mib for r in rows):>8.0f}")
    if (airflow.home(cfg) / "passwords.json").exists():
        user, password = airflow.admin_credentials(cfg)
        typer.echo(f"Airflow login: {user} / {password}   (state: {cfg.stack.root})")
    if (secrets.folder(cfg) / secrets.MLFLOW_PASSWORD.name).exists() or os.environ.get(secrets.MLFLOW_PASSWORD.env):
        user, password = secrets.mlflow_login(cfg)
        typer.echo(f"MLflow login: {user} / {password}")
    typer.echo("where each secret comes from:")
    for secret in secrets.ALL:
        typer.echo(f"  {secret.name:<26}{secrets.where(cfg, secret)}  ({secret.protects})")
    typer.echo(f"  {'airflow':<26}files in {airflow.home(cfg)} (passwords.json, secrets/)")
    if cfg.kerberos.enabled:
        from flywheel.stack import kerberos

        typer.echo(f"  {'kerberos keytabs':<26}files in {kerberos.home(cfg) / 'keytabs'} "
                   f"(HDFS logins of {kerberos.client_principal(cfg)} and the HDFS daemons)")
    if cfg.kafka.tls:
        from flywheel.stack import kafka_tls

        typer.echo(f"  {'kafka tls':<26}files in {kafka_tls.home(cfg)} (its CA's key in ca/; clients verify "
                   f"the broker against {kafka_tls.ca_pem(cfg)})")
    return all(r.healthy or r.off for r in rows)


@app.command()
@friendly
def logs(
    program: Annotated[Optional[str], typer.Argument(help="a program name, e.g. kafka, flink-taskmanager")] = None,
    lines: Annotated[int, typer.Option("-n", help="lines per file")] = 30,
    follow: Annotated[bool, typer.Option("-f", help="keep following")] = False,
):
    """Print the tail of every service log (or one program's)."""
    from flywheel.stack import control

    files = control.log_files(load_config())
    if program:
        files = [f for f in files if f.name.startswith(program)]
    if not files:
        typer.echo("no logs yet")
        return
    cmd = ["tail", f"-n{lines}", *(["-F"] if follow else []), *map(str, files)]
    sys.exit(subprocess.call(cmd))


@app.command()
@friendly
def topics():
    """Create the configured Kafka topics that do not exist yet."""
    from flywheel.topics import ensure_topics

    created = ensure_topics(load_config())
    typer.echo(f"created: {', '.join(created)}" if created else "all topics exist")


@app.command()
@friendly
def smoke():
    """Run the smoke job: one record through every service of the stack."""
    from flywheel.smoke import run_smoke

    run_smoke(load_config(), echo=typer.echo)


ps_app = typer.Typer(help="Parameter servers: run one shard, or read their stats.", no_args_is_help=True)
app.add_typer(ps_app, name="ps")


Shard = Annotated[int, typer.Option(help="shard index, 0..paramserver.shards-1")]
Restore = Annotated[str, typer.Option(help="snapshot to start from: latest, none, or a snapshot id")]


@ps_app.command("training")
@friendly
def ps_training(shard: Shard = 0, restore: Restore = "latest"):
    """Run a training PS shard (pull/push for trainers; ships deltas to Kafka)."""
    _run_ps("training", shard, restore)


@ps_app.command("serving")
@friendly
def ps_serving(shard: Shard = 0, restore: Restore = "latest"):
    """Run a serving PS shard (pull for model servers; applies deltas from Kafka)."""
    _run_ps("serving", shard, restore)


@ps_app.command("snapshot")
@friendly
def ps_snapshot():
    """Snapshot every training shard to HDFS now and log it to MLflow; prints the manifest."""
    import json

    from paramserver.snapshots import snapshot_all

    typer.echo(json.dumps(snapshot_all(load_config()), indent=2))


@ps_app.command("snapshots")
@friendly
def ps_snapshots():
    """List snapshots on HDFS, newest first (complete ones are restorable)."""
    from flywheel.hdfs import webhdfs
    from paramserver.snapshots import COMPLETE, snapshot_ids

    cfg = load_config()
    fs, root = webhdfs(cfg), cfg.paramserver.snapshot_dir
    names = snapshot_ids(fs, root)
    for name in names:
        state = "complete" if fs.exists(f"{root}/{name}/{COMPLETE}") else "incomplete"
        typer.echo(f"{name}  {state}  {cfg.hdfs_uri}{root}/{name}")
    if not names:
        typer.echo(f"no snapshots under {cfg.hdfs_uri}{root}")


def _run_ps(role: str, shard: int, restore: str) -> None:
    import logging

    from paramserver.service import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(load_config(), role, shard, restore=restore)
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@ps_app.command("stats")
@friendly
def ps_stats(role: Annotated[str, typer.Option(help="training or serving")] = "training"):
    """Print each shard's stats (rows, bytes, pulls/s, pushes/s, last sync, lag) as JSON."""
    import json

    from paramserver.client import PSClient

    client = PSClient.from_config(load_config(), role=role)
    typer.echo(json.dumps(client.stats(), indent=2, default=str))


joiner_app = typer.Typer(help="The streaming joiner job on Flink: start, stop with a savepoint, resume.",
                         no_args_is_help=True)
app.add_typer(joiner_app, name="joiner")


@joiner_app.command("start")
@friendly
def joiner_start():
    """Submit the joiner (arguments from the `joiner` config section); refused if one runs."""
    from flywheel import joiner_job

    cfg = load_config()
    typer.echo(f"joiner running as job {joiner_job.start(cfg)}: {cfg.flink_url}")


@joiner_app.command("stop")
@friendly
def joiner_stop():
    """Stop the running joiner with a savepoint (remembered for `resume`)."""
    from flywheel import joiner_job

    typer.echo(f"joiner stopped; savepoint {joiner_job.stop(load_config())}")


@joiner_app.command("resume")
@friendly
def joiner_resume(savepoint: Annotated[Optional[str], typer.Option(help="default: the last `stop`'s")] = None):
    """Submit the joiner again from a savepoint: nothing lost, nothing duplicated."""
    from flywheel import joiner_job

    cfg = load_config()
    typer.echo(f"joiner resumed as job {joiner_job.resume(cfg, savepoint)}: {cfg.flink_url}")


@joiner_app.command("keep")
@friendly
def joiner_keep():
    """Keep the joiner running: resubmit it from its newest checkpoint when Flink lost it."""
    import logging

    from flywheel import joiner_job

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    joiner_job.Keeper(load_config()).run()


@joiner_app.command("status")
@friendly
def joiner_status():
    """Running joiner jobs, the last savepoint, the Flink UI."""
    import json

    from flywheel import joiner_job

    typer.echo(json.dumps(joiner_job.status(load_config()), indent=2))


def land(cfg, data: str, days: float | None, end_date: str | None, negatives: int, history=None) -> None:
    """Land a history as example partitions on HDFS and say where (``history``: already loaded)."""
    from datetime import date

    from pipelines.batch.backfill import backfill as run

    written = run(cfg, data, date.fromisoformat(end_date) if end_date else None, days, negatives, data=history)
    first, last = min(written), max(written)
    typer.echo(f"landed {sum(written.values())} examples in {len(written)} days, {first}..{last}, "
               f"under {cfg.hdfs_uri}{cfg.joiner.examples_dir}")


@app.command("synthetic-world")
@friendly
def synthetic_world(
    folder: Annotated[str, typer.Argument(help="where to write the contract folder")],
    users: Annotated[int, typer.Option(min=1)] = 600,
    items: Annotated[int, typer.Option(min=1)] = 1000,
    days: Annotated[float, typer.Option(min=0.01, help="of sessions; items keep arriving over them")] = 30,
    seed: Annotated[int, typer.Option()] = 0,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
):
    """Write the seeded synthetic world (datasets/synthetic.py) as a data-contract folder: an
    example of the contract, and data for make demo DATA=<folder>."""
    from datasets import load
    from datasets.synthetic import write_world

    out = write_world(folder, fmt=fmt, users=users, items=items, days=days, seed=seed)
    history = load(out)
    typer.echo(f"wrote {out}: {len(history.items)} items, {history.events['user'].nunique()} users, "
               f"{len(history.events)} impressions ({len(history.engaged)} with a positive action)")


@app.command("import")
@friendly
def import_(
    data: Annotated[Optional[str], typer.Argument(
        help="a contract folder (items + interactions [+ users], CSV or Parquet; docs/data.md), a MovieLens "
             "release or a Taobao UserBehavior.csv folder (default: data.path, else the default data)")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="auto | contract | movielens | retail "
                                                                "(default: data.format)")] = None,
    check: Annotated[bool, typer.Option(help="only check the folder against the contract; land nothing")] = False,
    days: Annotated[Optional[float], typer.Option(help="squeeze the history into this many days")] = None,
    end_date: Annotated[Optional[str], typer.Option(help="last day, YYYY-MM-DD (default: yesterday, UTC)")] = None,
    negatives: Annotated[int, typer.Option(help="without impressions in the data: items drawn per positive")] = 4,
):
    """Check a history against the data contract (file, row, column and the fix for each
    problem), then land it as example partitions on HDFS where the joiner lands live ones, so a
    daily retrain has data before any live traffic. Exit 2 on a contract problem."""
    import datasets

    if fmt is not None and fmt not in datasets.FORMATS:
        typer.secho(f"error: --format {fmt}: expected one of {', '.join(datasets.FORMATS)}", fg=typer.colors.RED,
                    err=True)
        raise typer.Exit(2)
    cfg = load_config()
    folder = datasets.resolve(data or cfg.data.path, cfg.data, typer.echo)
    try:
        history = datasets.load(folder, fmt or cfg.data.format, cfg.data.actions)
    except FileNotFoundError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    events = history.events
    typer.echo(f"{folder}: meets the contract: {len(history.items)} items, {events['user'].nunique()} users, "
               f"{len(events)} events ({int(history.engaged.shape[0])} with a positive action; "
               f"{'real impressions' if history.has_impressions else 'no impressions: negatives are sampled'})")
    if not check:
        land(cfg, str(folder), days, end_date, negatives, history)


@app.command()
@friendly
def retrain(
    date: Annotated[str, typer.Option(help="the evaluation day YYYY-MM-DD; the days before it train")],
    mode: Annotated[str, typer.Option(help="warm (from the newest PS snapshot) or scratch")] = "warm",
    epochs: Annotated[Optional[int], typer.Option(help="default: batch.epochs")] = None,
    train_days: Annotated[Optional[int], typer.Option(help="default: batch.train_days")] = None,
    force_publish: Annotated[bool, typer.Option(help="publish even if the champion is better")] = False,
):
    """The daily retrain in one process (the daily_retrain DAG runs the same steps as tasks):
    Spark negative sampling, training, evaluation, MLflow, the gate and publishing."""
    import logging

    from flywheel.spark import spark_session
    from pipelines.batch import negative_sampling
    from pipelines.batch.publish import publish
    from pipelines.batch.retrain import RetrainParams, plan, train
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config()
    b = cfg.batch
    params = RetrainParams(date=date, mode=mode, epochs=epochs or b.epochs, train_days=train_days or b.train_days,
                           force_publish=force_publish)
    planned = plan(cfg, params)
    spark = spark_session(cfg, "flywheel-negative-sampling")
    try:
        stats = negative_sampling.run(spark, f"{cfg.hdfs_uri}{cfg.joiner.examples_dir}",
                                      f"{cfg.hdfs_uri}{b.training_dir}", planned["dates"].split(","),
                                      negative_sampling.batch_rates(cfg), b.retrieval_negatives)
    finally:
        spark.stop()
    typer.echo(f"sampled {stats['rows_in']} -> {stats['rows_out']} examples")
    result = train(cfg, params)
    typer.echo(f"run {result['run_id']} version {result['version']}: "
               + ", ".join(f"{k} {v:.4f}" for k, v in sorted(result["metrics"].items()) if isinstance(v, float)))
    typer.echo(publish(cfg, result, force=force_publish))


@app.command("online-train")
@friendly
def online_train():
    """Run the online trainer: joined examples from Kafka -> the champion's models -> the
    training PS (synced to serving within seconds); metrics to an MLflow run."""
    import logging
    import signal
    import threading

    from pipelines.online.run import run_online

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())  # finish the batch, close the MLflow run
    run_online(load_config(), stop=stopping.is_set)


@app.command()
@friendly
def serve():
    """Run the model server (feed API, event collector; docs at /docs) on stack.bind:serving.port."""
    import logging

    import uvicorn

    from serving.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config()
    import tensorflow as tf  # after serving.app (models/ sets TF up), before any op

    from threadpoolctl import threadpool_limits

    # a feed's ops are small: thread hand-offs cost more than they save, and OpenBLAS's idle
    # threads spin (the NumPy pass of serving/forward.py took 1.2 cores at 50 feeds/s with them)
    tf.config.threading.set_intra_op_parallelism_threads(cfg.serving.tf_threads)
    tf.config.threading.set_inter_op_parallelism_threads(cfg.serving.tf_threads)
    threadpool_limits(cfg.serving.tf_threads, user_api="blas")
    uvicorn.run(create_app(cfg), host=cfg.stack.bind, port=cfg.serving.port, log_level="info")


@app.command()
@friendly
def demo(
    data: Annotated[Optional[str], typer.Option(
        help="a history folder: the catalogue, the simulated users, the bootstrap history "
             "(default: data.path, else the default data: MovieLens 100K fetched, offline a synthetic world)")] = None,
    watch_s: Annotated[float, typer.Option(help="print live figures for this long (0: just start)")] = 60,
):
    """The closed loop on the running stack: a champion (backfill + one retrain when there is
    none), the joiner, the model server, the online trainer and the simulator; then where to look."""
    from pathlib import Path

    from flywheel.demo import run

    run(load_config(), Path(data) if data else None, watch_s=watch_s, echo=typer.echo)


@app.command()
@friendly
def chaos(
    faults: Annotated[str, typer.Option(help="programs to SIGKILL, in order (comma-separated), or 'all'")] = "all",
    rounds: Annotated[int, typer.Option(min=1, help="times through the fault list")] = 1,
    gap_s: Annotated[str, typer.Option(help="random wait before each fault, MIN-MAX seconds")] = "10-30",
    rate: Annotated[float, typer.Option(help="the run's own feed requests per second")] = 5.0,
    seed: Annotated[int, typer.Option(help="for the waits and the traffic")] = 0,
    data: Annotated[Optional[str], typer.Option(
        help="a history folder: the simulator replays it as a second traffic source whose actions are "
             "reconciled too (default: simulator.data, else data.path, else the default data)")] = None,
    simulator: Annotated[bool, typer.Option(help="run the simulator as a second traffic source; "
                                                 "--no-simulator: the run's own traffic only")] = True,
):
    """SIGKILL the stack's components one at a time under traffic; then reconcile the topics and
    the parameter servers and print what was lost, doubled, and how long each took to recover.
    Needs the loop up (flywheel demo). Exit 1 when an invariant fails."""
    import logging

    from flywheel import chaos as chaos_run

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    names = list(chaos_run.FAULTS) if faults == "all" else [f.strip() for f in faults.split(",") if f.strip()]
    low, _, high = gap_s.partition("-")
    cfg = load_config()
    if simulator and not (data or cfg.simulator.data):
        import datasets

        data = str(datasets.resolve(cfg.data.path, cfg.data, typer.echo))
    chaos_run.run(cfg, names * rounds, gap_s=(float(low), float(high or low)), rate=rate, seed=seed,
                  data=(data or cfg.simulator.data) if simulator else None, echo=typer.echo)


@app.command()
@friendly
def simulate(
    data: Annotated[Optional[str], typer.Option(help="a history folder (default: simulator.data)")] = None,
    speedup: Annotated[Optional[float], typer.Option(
        help="event-time gaps are divided by this; 0: as fast as --rate allows (default: simulator.speedup)")] = None,
    rate: Annotated[Optional[float], typer.Option(help="most feed requests per second (default: simulator.rate)")] = None,
    once: Annotated[bool, typer.Option(help="one pass over the held-out ratings, then stop")] = False,
    duration_s: Annotated[Optional[float], typer.Option(help="start no session after this many seconds")] = None,
    users: Annotated[Optional[int], typer.Option(min=1, help="only the first N users of the held-out ratings")] = None,
):
    """Replay a history's held-out events as users of the model server (stack.host:serving.port): feeds,
    actions (some late), Prometheus metrics on simulator.metrics_port. Loops until stopped."""
    import logging
    import signal

    from simulator.replay import Simulator

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config()
    try:
        sim = Simulator.from_config(cfg, data=data, speedup=speedup, rate=rate)
        server = sim.metrics.serve(cfg.stack.bind, cfg.simulator.metrics_port)
    except (FileNotFoundError, ValueError, OSError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    probe = None
    if cfg.simulator.probe_every_s > 0:
        from paramserver.client import PSClient
        from simulator.freshness import FreshnessProbe

        probe = FreshnessProbe(f"http://{cfg.stack.host}:{cfg.serving.port}", PSClient.from_config(cfg, role="serving"),
                               registry=sim.metrics.registry, every_s=cfg.simulator.probe_every_s).start()
    for signum in (signal.SIGTERM, signal.SIGINT):  # finish: post the held-back actions, then exit
        signal.signal(signum, lambda *_: sim.stop())
    try:
        sessions = sim.run(once=once, duration_s=duration_s, users=users)
    finally:
        if probe is not None:
            probe.stop(wait=False)  # a probe in flight must not hold the shutdown
        server.shutdown()
        sim.close()
    typer.echo(f"{sessions} sessions; " + ", ".join(f"{k} {v:.0f}" for k, v in sim.metrics.summary().items()))


def main() -> None:  # pragma: no cover - console entry point
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
