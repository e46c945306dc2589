"""Replay: the held-out events of a history as live users of the model server.

Each held-out request is a session (simulator/population.py): the user asks for a feed of
``k`` items, acts on it, and the actions are posted as ``Action`` events carrying the feed's
``request_id``, each item and ``event_time`` = the wall clock (ms) when the feed arrived:
the closed loop runs in real time, whatever the data's dates.

Timing (seconds of a monotonic clock): session i is due ``(t_i - t_0) / speedup`` after the
start, ``t`` being the events' unix times (``speedup`` 0: all at once), and never sooner than
``1 / rate`` after the previous feed request. After the last session the replay starts over,
one mean gap later, unless ``once``. A ``late_share`` of the actions is held back and posted
``late_delay_s`` later with its original ``event_time`` (simulator/late.py). After
``drift_after_s`` seconds the users' tastes drift (their genre affinities rotate).

A server that is restarting or has no model yet is waited for (simulator/client.py); a run
that ends by ``duration_s`` still posts its held-back actions when they are due.

Example::

    sim = Simulator(load_population("ml-100k/"), "http://127.0.0.1:8000", rate=20)
    sim.run(duration_s=60)
    sim.metrics.summary()
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Iterator

import numpy as np

from flywheel import secrets
from flywheel.config import ConfigError, FlywheelConfig
from simulator.client import GaveUp, ModelServerClient
from simulator.late import LateActions, split_late
from simulator.metrics import SimulatorMetrics
from simulator.population import Population, load_population
from streaming.schemas import Action, arm_of

log = logging.getLogger(__name__)


def session_offsets(times_s: np.ndarray, speedup: float) -> np.ndarray:
    """Seconds from the first session to each: event-time gaps divided by ``speedup`` (0: all 0)."""
    times_s = np.asarray(times_s, dtype=float)
    if speedup < 0:
        raise ValueError(f"speedup {speedup}: expected >= 0 (0: as fast as the rate allows)")
    if not speedup or not len(times_s):
        return np.zeros(len(times_s))
    return (times_s - times_s[0]) / speedup


class Simulator:
    """Replays a :class:`Population` against the model server at ``base_url``.

    Args:
      population: the users and their held-out sessions.
      base_url: the model server, e.g. ``http://127.0.0.1:8000``.
      k: items per feed.
      speedup: event-time gaps are divided by this; 0 runs sessions as fast as ``rate`` allows.
      rate: at most this many feed requests per second.
      late_share: share of the actions held back, 0..1.
      late_delay_s: how long a held-back action waits, seconds.
      drift_after_s: seconds after the start when the tastes drift (None: never).
      seed: of the users' choices and of which actions are late.
      metrics: where to count (default: a new registry).
      log_every_s: progress log period, seconds.
      **client: passed to :class:`ModelServerClient` (timeout_s, min_backoff_s, max_backoff_s,
        max_events).
    """

    def __init__(self, population: Population, base_url: str, *, k: int = 10, speedup: float = 0.0,
                 rate: float = 5.0, late_share: float = 0.0, late_delay_s: float = 60.0,
                 drift_after_s: float | None = None, seed: int = 0, metrics: SimulatorMetrics | None = None,
                 log_every_s: float = 30.0, **client):
        if rate <= 0 or speedup < 0 or not 0 <= late_share <= 1 or k < 1:
            raise ValueError(f"rate {rate} (> 0), speedup {speedup} (>= 0), late_share {late_share} (0..1), "
                             f"k {k} (>= 1): one is out of range")
        self.population = population
        self.k, self.speedup, self.rate = k, speedup, rate
        self.late_share, self.drift_after_s = late_share, drift_after_s
        self.rng = np.random.default_rng(seed)
        self.metrics = metrics or SimulatorMetrics()
        self.late = LateActions(late_delay_s)
        self.client = ModelServerClient(base_url, self.metrics, should_stop=self._should_stop, **client)
        self.log_every_s = log_every_s
        self.sessions_done = 0
        self._start = time.monotonic()
        self._deadline = self._stop_at = self._next_log = math.inf
        self._drift_seen = False
        self._stopping = threading.Event()

    @classmethod
    def from_config(cls, cfg: FlywheelConfig, data: str | None = None, speedup: float | None = None,
                    rate: float | None = None, metrics: SimulatorMetrics | None = None, **client) -> Simulator:
        """The simulator the ``simulator`` config describes, against ``stack.host:serving.port``.

        Args:
          data, speedup, rate: override ``simulator.data``, ``.speedup``, ``.rate`` (None: the config's).
          **client: more :class:`ModelServerClient` arguments (on_feed, on_accepted).

        Raises:
          ConfigError: ``simulator.k`` is above ``serving.max_k``.
          FileNotFoundError: no data folder given, or it holds no history.
          datasets.contract.ContractError: the folder breaks the data contract.
        """
        s = cfg.simulator
        if s.k > cfg.serving.max_k:
            raise ConfigError(f"simulator.k = {s.k} is above serving.max_k = {cfg.serving.max_k}: the server would "
                              "refuse every feed; lower FLYWHEEL__SIMULATOR__K or raise serving.max_k")
        population = load_population(data if data is not None else s.data, s.holdout, cfg.data.format,
                                     cfg.data.actions, base_rate=s.base_click_rate, seed=s.seed)
        return cls(population, f"http://{cfg.stack.host}:{cfg.serving.port}", k=s.k,
                   speedup=s.speedup if speedup is None else speedup, rate=s.rate if rate is None else rate,
                   late_share=s.late_share, late_delay_s=s.late_delay_s, drift_after_s=s.drift_after_s,
                   seed=s.seed, metrics=metrics, timeout_s=s.timeout_s,
                   post_timeout_s=max(s.timeout_s, cfg.serving.events_ack_timeout_s + 5), max_backoff_s=s.max_backoff_s,
                   max_events=cfg.serving.max_events, api_key=secrets.api_key(cfg), **client)

    # -- the run -----------------------------------------------------------------------------
    def run(self, once: bool = False, duration_s: float | None = None, users: int | None = None) -> int:
        """Replay sessions until the data ends (``once``), ``duration_s`` passes, :meth:`stop` is
        called, or forever; then post the held-back actions when due (at once after ``stop``).
        Returns the sessions run.

        Args:
          once: one pass over the held-out requests.
          duration_s: start no session after this many seconds.
          users: only the first ``users`` users of the held-out requests.
        """
        self._start = time.monotonic()
        self._deadline = self._stop_at = math.inf if duration_s is None else self._start + duration_s
        self._next_log = self._start + self.log_every_s
        done_before = self.sessions_done
        try:
            self._replay(once, users)
            self._drain_late()
        finally:
            if self.late:
                log.warning("%d held-back actions were not posted", len(self.late))
            self._log_progress()
        return self.sessions_done - done_before

    def stop(self) -> None:
        """End the run soon (from a signal handler or another thread): no new session, retries
        end after one more attempt, held-back actions are posted at once."""
        self._stopping.set()

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    def _replay(self, once: bool, users: int | None) -> None:
        """Run the sessions as they fall due, at most ``rate`` a second, until the schedule ends."""
        next_request = self._start
        try:
            for due, user in self._schedule(once, users):
                if not self._wait_until(max(due, next_request)):
                    return
                next_request = time.monotonic() + 1 / self.rate
                self.session(user)
        except GaveUp as exc:  # the server stayed down until the run ended
            log.warning("%s", exc)

    def _schedule(self, once: bool, users: int | None) -> Iterator[tuple[float, int]]:
        """(when due on the monotonic clock, user) of each session, passes repeated unless ``once``
        (the rate cap is applied by the caller)."""
        sessions = self.population.sessions(users)
        offsets = session_offsets(sessions["time"].to_numpy(), self.speedup)
        period = offsets[-1] * len(offsets) / max(len(offsets) - 1, 1)  # one mean gap after the last
        for n in range(1) if once else itertools.count():
            for user, offset in zip(sessions["user"].tolist(), offsets.tolist()):
                yield self._start + n * period + offset, int(user)

    def session(self, user: int) -> int:
        """One session: get a feed, act on it, post the on-time actions, hold the late ones.

        Returns:
          the number of actions the user took (posted now or held back).
        """
        feed = self.client.feed(user, self.k)
        self.sessions_done += 1
        if feed is None:
            return 0
        now_ms = time.time_ns() // 1_000_000
        reactions = self.population.respond(user, feed.items, self.rng, drifted=self.drifted)
        arm = arm_of(feed.model_version)
        self.metrics.shown.labels(arm).inc(len(feed.items))
        for r in reactions:
            self.metrics.reactions.labels(arm, r.action).inc()
        actions = [Action(request_id=feed.request_id, user_id=user, item_id=r.item_id, event_time=now_ms,
                          action=r.action) for r in reactions]
        on_time, late = split_late(actions, self.late_share, self.rng)
        self.late.hold(late, time.monotonic())
        if on_time:
            self.client.post(on_time)
        return len(actions)

    @property
    def drifted(self) -> bool:
        """Whether the tastes have drifted (``drift_after_s`` seconds into the run)."""
        if self.drift_after_s is None or time.monotonic() - self._start < self.drift_after_s:
            return False
        if not self._drift_seen:
            log.info("users' tastes drift now (%.0f s into the run)", time.monotonic() - self._start)
            self.metrics.drifted.set(1)
            self._drift_seen = True
        return True

    # -- waiting -----------------------------------------------------------------------------
    def _wait_until(self, due: float) -> bool:
        """Sleep until ``due``, posting late actions as they fall due; False once past the deadline."""
        while True:
            now = time.monotonic()
            self._post_late(self.late.due(now))
            if now >= self._next_log:
                self._log_progress()
                self._next_log = now + self.log_every_s
            if now >= self._deadline or self._stopping.is_set():
                return False
            if now >= due:
                return True
            late = self.late.next_due()
            wake = min(due, self._deadline, self._next_log, math.inf if late is None else late)
            self._stopping.wait(max(0.0, wake - now))

    def _post_late(self, actions: list[Action]) -> None:
        if not actions:
            return
        try:
            self.client.post(actions, late=True)
        except GaveUp as exc:
            log.warning("%s; %d late actions were not posted", exc, len(actions))

    def _drain_late(self) -> None:
        """Post the held-back actions when each is due (retrying at most until the last is due
        plus ``late_delay_s``)."""
        if (last := self.late.last_due()) is not None:
            self._stop_at = max(last, time.monotonic()) + self.late.delay_s
        while (next_due := self.late.next_due()) is not None:
            if self._stopping.wait(max(0.0, next_due - time.monotonic())):
                self._post_late(self.late.take_all())  # stopping: post them now, a little less late
                return
            self._post_late(self.late.due(time.monotonic()))

    def _should_stop(self) -> bool:
        return self._stopping.is_set() or time.monotonic() >= self._stop_at

    def _log_progress(self) -> None:
        m = self.metrics
        actions = sum(v for k, v in m.summary().items() if k.startswith("flywheel_simulator_actions_total"))
        errors = sum(v for k, v in m.summary().items() if k.startswith("flywheel_simulator_errors_total"))
        log.info("%d sessions, %d actions accepted (%d late), %d held back, %d errors, %.0f s; by arm: %s",
                 self.sessions_done, actions, m.value("flywheel_simulator_late_actions_total"), len(self.late),
                 errors, time.monotonic() - self._start,
                 "; ".join(f"{arm} {r['shown']:.0f} shown, click {r['click_rate']:.2%}, like {r['like_rate']:.2%}"
                           for arm, r in m.rates_by_arm().items()) or "-")
