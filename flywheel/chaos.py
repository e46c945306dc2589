"""``make chaos``: SIGKILL the stack's components one at a time under traffic, then prove that
nothing acknowledged was lost or doubled and that serving converged to training.

The run (on a stack whose loop is up: ``flywheel demo`` first):

1. :class:`Traffic` requests feeds for users of its own (IDs from :data:`USER_BASE`) and, for a
   share of them, posts a click (and sometimes a like) on the first item, recording every
   answer and every action the event collector acknowledged (202). It never re-posts.
   With a history folder (``make chaos``), :class:`SimulatedTraffic` also replays it through
   the simulator (sessions, skips, late actions, retries), and its acknowledged actions are
   reconciled as well; the supervised simulator is stopped for the run.
2. For each fault, at a random moment: SIGKILL the program's whole process group (what a
   crash or the OOM killer does). supervisord restarts it (Flink restarts the joiner after a
   TaskManager loss; the joiner keeper resubmits it after a JobManager loss). Measured: time
   until the service is healthy again, until the joiner runs again, and until a freshness
   probe sees a new embedding in the serving PS; and the feed requests that failed.
3. Traffic stops; once the trainer and the sync caught up, :mod:`flywheel.reconcile` checks
   the topics (each acknowledged action on ``actions`` exactly once; each acknowledged click
   joined into ``examples``, no emission twice), the training PS's ledger (every example
   offset from its restored snapshot up to the trainer's position applied once, by the push
   names: paramserver/ledger.py), and that the serving PS equals the training PS for the
   run's users. A failed invariant fails the run with the IDs or offsets.

The table and the invariants are printed and written to ``build/chaos/<time>.json``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import requests

from flywheel import flinkjobs, joiner_job, reconcile, secrets
from flywheel.config import REPO_ROOT, FlywheelConfig
from flywheel.stack import supervisor as sv
from flywheel.stack.base import StackError, services, wait_until

USER_BASE = 8_000_000_000_000  # the chaos run's users: above MovieLens users, below the freshness probes'
PROBE_BASE = 8_500_000_000_000
# program -> the service whose health says it is back
FAULTS = {
    "kafka": "kafka", "flink-taskmanager": "flink", "flink-jobmanager": "flink", "ps-training-0": "paramserver",
    "ps-serving-0": "paramserver", "online-trainer": "online-trainer", "model-server": "model-server",
    "hdfs-datanode": "hdfs",
}


@dataclass
class Outcome:
    """One fault's figures (seconds from the kill; None: not within the run's timeout)."""

    program: str
    killed_at: float
    healthy_s: float | None = None
    joiner_s: float | None = None
    fresh_s: float | None = None
    feeds: int = 0
    feeds_failed: int = 0
    longest_failing_s: float = 0.0
    slowest_feed_s: float = 0.0


class Recorded:
    """What a traffic source saw: each feed attempt (time sent, answered 200, seconds) and each
    action the event collector acknowledged (202), as the wire dicts the reconciliation matches."""

    def __init__(self):
        self.feeds: list[tuple[float, bool, float]] = []
        self.acked: list[dict] = []
        self.unanswered: Counter = Counter()  # reconcile.action_key -> its posts that got no HTTP answer
        self.posts_failed = 0
        self._lock = threading.Lock()

    def feed_seen(self, sent: float, ok: bool, seconds: float) -> None:
        with self._lock:
            self.feeds.append((sent, ok, seconds))

    def users_touched(self) -> np.ndarray:
        with self._lock:
            return np.array(sorted({a["user_id"] for a in self.acked}), dtype=np.uint64)

    def window(self, start: float, end: float) -> tuple[int, int, float, float]:
        """(feeds, failed, the longest run of consecutive failures in s, the slowest answered
        feed in s) within [start, end)."""
        with self._lock:
            inside = [(t, ok, s) for t, ok, s in self.feeds if start <= t < end]
        slowest = max((s for _, ok, s in inside if ok), default=0.0)
        failed, longest, run_start = 0, 0.0, None
        for t, ok, _ in inside:
            if not ok:
                failed += 1
                run_start = t if run_start is None else run_start
                longest = max(longest, t - run_start)
            else:
                run_start = None
        return len(inside), failed, longest, slowest


class Traffic(Recorded):
    """Feeds and actions against the model server from a thread (see the module docstring)."""

    def __init__(self, url: str, rate: float = 5.0, users: int = 200, act_share: float = 0.5, seed: int = 0,
                 headers: dict[str, str] | None = None, post_timeout_s: float = 15.0):
        super().__init__()
        self.url, self.rate, self.users, self.act_share = url, rate, users, act_share
        self.post_timeout_s = post_timeout_s  # above the server's wait for Kafka (serving.events_ack_timeout_s)
        self._stop = threading.Event()
        self._rng = random.Random(seed)
        self._headers = headers or {}  # e.g. the API key (secrets.api_headers)
        self._local = threading.local()  # a requests.Session per thread: the feed thread and the posts'
        self._thread = threading.Thread(target=self._run, name="chaos-traffic", daemon=True)
        # posts on their own threads: a post waiting out a Kafka restart must not pause the feeds
        self._posts = ThreadPoolExecutor(max_workers=8, thread_name_prefix="chaos-post")

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=30)
        self._posts.shutdown(wait=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0 / self.rate):
            user = USER_BASE + self._rng.randrange(self.users)
            sent = time.time()
            try:
                got = self._session().get(f"{self.url}/feed", params={"user_id": user, "k": 5}, timeout=5)
                ok = got.status_code == 200
            except requests.RequestException:
                ok = False
            self.feed_seen(sent, ok, time.time() - sent)
            if ok and self._rng.random() < self.act_share:
                self._posts.submit(self._act, user, got.json(), self._rng.random() < 0.3)

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "http"):
            self._local.http = requests.Session()
            self._local.http.headers.update(self._headers)
        return self._local.http

    def _act(self, user: int, feed: dict, like: bool) -> None:
        item = feed["items"][0]["item_id"]
        now = int(time.time() * 1000)
        kinds = ["click", "like"] if like else ["click"]
        events = [{"schema_version": 1, "request_id": feed["request_id"], "user_id": user, "item_id": item,
                   "event_time": now, "action": kind} for kind in kinds]
        try:
            posted = self._session().post(f"{self.url}/events", json={"events": events}, timeout=self.post_timeout_s)
        except requests.RequestException:
            posted = None
        with self._lock:
            if posted is None:  # never re-posted, so never acknowledged: recorded for the books only
                self.unanswered.update(reconcile.action_key(e) for e in events)
            if posted is not None and posted.status_code == 202:
                self.acked.extend(events)
            else:
                self.posts_failed += 1


class SimulatedTraffic(Recorded):
    """The simulator (simulator/replay.py) as the run's second traffic source, in a
    thread: its users' sessions, late actions and retries as ``flywheel simulate`` sends them,
    each feed attempt, each acknowledged action and each post that got no answer recorded for
    the reconciliation. Its client retries a post whose answer was lost, so an action the
    server took before a crash can reach ``actions`` twice; the reconciliation lists that as
    rewritten by a retry, not as doubled (reconcile.rewritten_by_retries)."""

    def __init__(self, cfg: FlywheelConfig, data: str):
        from simulator.replay import Simulator

        super().__init__()
        self.sim = Simulator.from_config(cfg, data=data, on_feed=self.feed_seen, on_accepted=self._accepted,
                                         on_unanswered=self._unanswered)
        self.error: str | None = None  # the replay's exception, if it died
        self._thread = threading.Thread(target=self._replay, name="chaos-simulator", daemon=True)
        self._stopped = False

    def _replay(self) -> None:
        try:
            self.sim.run()
        except Exception as exc:  # noqa: BLE001 - reported by the run, which then fails
            self.error = f"{type(exc).__name__}: {exc}"

    def start(self) -> SimulatedTraffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.sim.stop()  # posts the held-back (late) actions at once
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=120)
        self.sim.close()
        m = self.sim.metrics  # requests the server refused (4xx, 5xx but 503), which the simulator drops
        self.posts_failed = int(m.value("flywheel_simulator_errors_total", kind="client_error")
                                + m.value("flywheel_simulator_errors_total", kind="server_error"))

    def _accepted(self, actions) -> None:
        with self._lock:
            self.acked.extend(a.model_dump(mode="json", exclude_none=True) for a in actions)

    def _unanswered(self, actions) -> None:
        with self._lock:
            self.unanswered.update(reconcile.action_key(a.model_dump(mode="json")) for a in actions)


def kill(cfg: FlywheelConfig, program: str) -> int:
    """SIGKILL ``program``'s process group (it and its children); the old pid."""
    info = sv.Supervisor(cfg).info().get(program)
    if not info or info["statename"] != "RUNNING" or not info["pid"]:
        raise StackError(f"{program} is not running (supervisord: {info and info['statename']}); "
                         "bring the loop up first (flywheel demo)")
    os.killpg(info["pid"], signal.SIGKILL)
    return info["pid"]


def _restarted(cfg: FlywheelConfig, program: str, old_pid: int) -> bool:
    info = sv.Supervisor(cfg).info().get(program, {})
    return info.get("statename") == "RUNNING" and info.get("pid") not in (None, 0, old_pid)


def run_fault(cfg: FlywheelConfig, program: str, traffic: Traffic, probe: Callable[[int], float | None],
              timeout_s: float = 240, echo=print) -> Outcome:
    """Kill ``program``, then time its recovery (see :class:`Outcome`)."""
    health = {s.name: s.healthy for s in services(cfg)}[FAULTS[program]]
    started = time.time()
    old = kill(cfg, program)
    out = Outcome(program, started)
    echo(f"  killed {program} (pid {old})")
    if wait_until(lambda: _restarted(cfg, program, old) and health(), timeout_s, 0.2):
        out.healthy_s = time.time() - started
    job = lambda: bool(flinkjobs.running(cfg, joiner_job.job_name(cfg))) and _joiner_running(cfg)  # noqa: E731
    if wait_until(job, timeout_s, 0.5):
        out.joiner_s = time.time() - started
    deadline = started + timeout_s
    n = 0
    while time.time() < deadline:
        n += 1
        try:
            got = probe(PROBE_BASE + int(started) % 100_000 * 100 + n)
        except Exception:  # noqa: BLE001 - the loop is still coming back
            got = None
            time.sleep(1)
        if got is not None:
            out.fresh_s = time.time() - started
            break
    out.feeds, out.feeds_failed, out.longest_failing_s, out.slowest_feed_s = traffic.window(started, time.time())
    return out


def _joiner_running(cfg: FlywheelConfig) -> bool:
    """Every vertex of the joiner job is RUNNING (a job RUNNING while its tasks are still
    being deployed after a restart is not back yet)."""
    for jid in flinkjobs.running(cfg, joiner_job.job_name(cfg)):
        body = requests.get(f"{cfg.flink_url}/jobs/{jid}", auth=secrets.flink_auth(cfg), timeout=5).json()
        if body.get("state") == "RUNNING" and all(v.get("status") == "RUNNING" for v in body.get("vertices", [])):
            return True
    return False


def table(outcomes: list[Outcome]) -> str:
    def s(v):
        return f"{v:8.1f}" if v is not None else "   never"

    lines = [f"{'fault (SIGKILL)':<20}{'healthy s':>10}{'joiner s':>10}{'fresh s':>10}{'feeds':>8}{'failed':>8}"
             f"{'rate':>7}{'longest fail s':>16}{'slowest ok s':>14}"]
    for o in outcomes:
        rate = o.feeds_failed / o.feeds if o.feeds else 0.0
        lines.append(f"{o.program:<20}{s(o.healthy_s):>10}{s(o.joiner_s):>10}{s(o.fresh_s):>10}{o.feeds:>8}"
                     f"{o.feeds_failed:>8}{rate:>7.1%}{o.longest_failing_s:>16.1f}{o.slowest_feed_s:>14.2f}")
    return "\n".join(lines)


def run(cfg: FlywheelConfig, faults: list[str], gap_s: tuple[float, float] = (10, 30), rate: float = 5.0,
        seed: int = 0, timeout_s: float = 240, settle_s: float = 180, data: str | None = None, echo=print) -> dict:
    """The whole run (module docstring); returns the report (also written as JSON). Raises
    StackError naming the failed invariants and their IDs.

    Args:
      data: a history folder: the simulator replays it in this process as a second traffic
        source whose acknowledged actions are reconciled too (the supervised simulator is
        stopped for the run); None: the run's own traffic only.
    """
    from paramserver.client import PSClient
    from simulator.freshness import probe_once

    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise StackError(f"unknown fault(s) {sorted(unknown)}; choose from {sorted(FAULTS)}")
    url = f"http://{cfg.stack.host}:{cfg.serving.port}"
    if not requests.get(f"{url}/health", timeout=5).json().get("model_version"):
        raise StackError(f"the model server at {url} serves no champion: run 'flywheel demo' first")
    if not flinkjobs.running(cfg, joiner_job.job_name(cfg)):
        raise StackError("no joiner runs: run 'flywheel demo' (or 'flywheel joiner start') first")
    rng = random.Random(seed)
    start = {t: reconcile.end_offsets(cfg, t)
             for t in (cfg.serving.actions_topic, cfg.joiner.examples_topic, cfg.serving.features_topic)}
    simulating = sv.Supervisor(cfg).info().get("simulator", {}).get("statename") == "RUNNING"
    if simulating:  # quiet for the reconciliation (and replayed here when `data` is given); started again at the end
        echo("stopping the supervised simulator for the run")
        sv.Supervisor(cfg).stop("simulator")
    sources: list[Recorded] = []
    serving_ps = None
    try:
        traffic = Traffic(url, rate=rate, seed=seed, headers=secrets.api_headers(cfg),
                          post_timeout_s=cfg.serving.events_ack_timeout_s + 5)
        sources = [traffic] + ([SimulatedTraffic(cfg, data)] if data else [])
        for source in sources:
            source.start()
        serving_ps = PSClient.from_config(cfg, role="serving")
        session = requests.Session()
        session.headers.update(secrets.api_headers(cfg))

        def probe(user: int) -> float | None:
            return probe_once(session, url, serving_ps, user, timeout_s=30)

        outcomes = []
        try:
            for program in faults:
                time.sleep(rng.uniform(*gap_s))
                outcomes.append(run_fault(cfg, program, traffic, probe, timeout_s, echo))
                echo(table(outcomes[-1:]).splitlines()[1])
            time.sleep(rng.uniform(*gap_s))
        finally:
            for source in sources:
                source.stop()
        acked = [a for source in sources for a in source.acked]
        unanswered = sum((source.unanswered for source in sources), Counter())
        users = np.unique(np.concatenate([source.users_touched() for source in sources]))
        report = {"faults": [asdict(o) for o in outcomes], "feeds": len(traffic.feeds), "actions_acked": len(acked),
                  "posts_failed": traffic.posts_failed}
        if data:
            simulated = sources[1]
            report["simulator"] = {
                "feeds": len(simulated.feeds), "feeds_failed": sum(not ok for _, ok, _ in simulated.feeds),
                "actions_acked": len(simulated.acked), "sessions": simulated.sim.sessions_done,
                "requests_dropped": simulated.posts_failed, "error": simulated.error,
                "counters": simulated.sim.metrics.summary()}
            echo(f"simulator: {simulated.sim.sessions_done} sessions, {len(simulated.feeds)} feed attempts "
                 f"({report['simulator']['feeds_failed']} failed, retried), {len(simulated.acked)} actions "
                 f"acknowledged, {simulated.posts_failed} requests refused and dropped")
            if simulated.error:
                raise StackError(f"the simulator's replay died: {simulated.error}")
        tallies = _reconcile(cfg, start, acked, unanswered, users, settle_s, report, echo)
    finally:
        for source in sources:
            source.stop()  # again, if the run failed before its own stop: idempotent
        if serving_ps is not None:
            serving_ps.close()
        if simulating:
            sv.Supervisor(cfg).start("simulator")
    echo("\n" + table(outcomes))
    echo(f"\n{'invariant':<44}{'expected':>8}{'lost':>8}{'doubled':>9}")
    for t in tallies:
        echo(t.line())
    echo(f"acknowledged clicks on feeds whose features a model-server crash lost before logging (cannot join): "
         f"{len(report['clicks_on_unlogged_features'])} {report['clicks_on_unlogged_features'][:5]}")
    echo(f"acknowledged actions written again by a client's retry after a lost answer (the joiner merges them): "
         f"{len(report['rewritten_by_retries'])} {report['rewritten_by_retries'][:5]}")
    echo(f"serving PS = training PS for {report['converged']['rows']} rows: max |diff| "
         f"{report['converged']['max_diff']:.2e} ({'ok' if report['converged']['ok'] else 'FAILED'})")
    out_dir = REPO_ROOT / "build" / "chaos"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    echo(f"report: {path}")
    failed = [t.name for t in tallies if not t.ok] + ([] if report["converged"]["ok"] else ["serving = training"])
    failed += [f"{o.program} never recovered" for o in outcomes if o.healthy_s is None or o.fresh_s is None]
    if failed:
        raise StackError("chaos run failed: " + "; ".join(failed) + f" (details: {path})")
    return report


def _reconcile(cfg, start, acked: list[dict], unanswered: Counter, users: np.ndarray, settle_s: float,
               report: dict, echo) -> list[reconcile.Tally]:
    from paramserver.client import PSClient

    echo(f"reconciling {len(acked)} acknowledged actions (waiting up to {settle_s:.0f}s for the loop)")
    deadline = time.monotonic() + settle_s
    while True:  # the joiner emits on checkpoints: wait until every click is joined, or time is up
        written = reconcile.read_topic(cfg, cfg.serving.actions_topic, start[cfg.serving.actions_topic])
        actions = reconcile.actions_reconciled(acked, written, unanswered)
        unlogged = reconcile.unlogged_clicks(acked, reconcile.read_topic(cfg, cfg.serving.features_topic,
                                                                         start[cfg.serving.features_topic]))
        examples = reconcile.examples_reconciled(acked, reconcile.read_topic(cfg, cfg.joiner.examples_topic,
                                                                             start[cfg.joiner.examples_topic]), unlogged)
        if (actions.ok and not examples.lost) or time.monotonic() > deadline:
            break
        time.sleep(5)
    training, serving = PSClient.from_config(cfg, role="training"), PSClient.from_config(cfg, role="serving")
    items = np.array(sorted({a["item_id"] for a in acked}), np.uint64)
    ids = {"user_id": users, "item_id": items}
    result = (False, float("inf"), 0)
    while time.monotonic() < deadline + 60:  # the trainer's last batch, then one sync interval
        result = reconcile.converged(training, serving, ids)
        if result[0]:
            break
        time.sleep(2)
    applied = _ledger_tally(cfg, training)
    training.close()
    serving.close()
    report["converged"] = {"ok": result[0], "max_diff": result[1], "rows": result[2]}
    report["clicks_on_unlogged_features"] = [list(k) for k in unlogged]  # a known loss: README, Guarantees
    report["rewritten_by_retries"] = [list(k) for k in reconcile.rewritten_by_retries(acked, written, unanswered)]
    report["invariants"] = [asdict(t) | {"ok": t.ok} for t in (actions, examples, applied)]
    return [actions, examples, applied]


def _ledger_tally(cfg: FlywheelConfig, training) -> reconcile.Tally:
    """Every example from the training PS's restored snapshot up to the trainer's position
    applied exactly once, by the shards' ledgers (paramserver/ledger.py)."""
    from flywheel.prometheus import scrape
    from paramserver.ledger import gaps_and_doubles

    samples = scrape(f"http://{cfg.stack.host}:{cfg.online.metrics_port}/metrics", timeout_s=5)
    position = {int(x.labels["partition"]): int(x.value) for x in samples if x.name == "flywheel_online_position"}
    shards = training.stats()  # after the position: the ledger is at or past it
    gaps, doubles = gaps_and_doubles(shards, cfg.joiner.examples_topic, position)
    starts = [((s.get("restored_from") or {}).get("examples_offsets") or {}).get(cfg.joiner.examples_topic, {})
              for s in shards]
    span = sum(end - max([int(st.get(str(p), end)) for st in starts] or [end]) for p, end in position.items())
    return reconcile.Tally("examples since the last restore -> applied once", max(span, 0),
                           lost=[(g["partition"], *g["offsets"]) for g in gaps],
                           doubled=[(d["table"], d["partition"], *d["offsets"]) for d in doubles])
