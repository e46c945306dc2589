"""Freshness: the time from an action's arrival at the event collector to the serving PS
holding an embedding updated by it: the whole loop (collector -> Kafka ``actions`` -> Flink
joiner -> Kafka ``examples`` (committed at a checkpoint) -> online trainer -> training PS ->
sync -> serving PS).

Measured by probing, the way synthetic monitoring measures a pipeline end to end: a probe user
of its own (IDs from :data:`PROBE_BASE`, never a real user's, so no other action can move the
row) asks for a feed, likes its first item, and the serving PS is polled until the user's row
differs from what it held before the post. One probe = one sample (seconds).

Metrics (a registry of the caller's): ``flywheel_freshness_seconds`` (histogram, s) and
``flywheel_freshness_probes_total{result}`` (``fresh``, ``timeout``, ``error``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np
import requests
from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger(__name__)
PROBE_BASE = 9_000_000_000_000  # probe users' IDs: far above any MovieLens user
BUCKETS = (0.5, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 30, 45, 60, 120)


def probe_once(session: requests.Session, base_url: str, ps, user: int, timeout_s: float = 60,
               poll_s: float = 0.05) -> float | None:
    """Seconds from posting a like for ``user`` to the serving PS row changing; None on timeout.

    Args:
      session: HTTP session to the model server at ``base_url``.
      ps: a PSClient of the serving PS (``pull("user_id", ids)``).
      user: a probe user's ID (no other traffic for it).
    """
    feed = session.get(f"{base_url}/feed", params={"user_id": user, "k": 5}, timeout=10)
    feed.raise_for_status()
    body = feed.json()
    item = body["items"][0]["item_id"]
    ids = np.array([user], np.uint64)
    before = np.array(ps.pull("user_id", ids)[0], copy=True)
    now_ms = int(time.time() * 1000)
    events = [{"schema_version": 1, "request_id": body["request_id"], "user_id": user, "item_id": item,
               "event_time": now_ms, "action": kind} for kind in ("click", "like")]
    started = time.monotonic()
    posted = session.post(f"{base_url}/events", json={"events": events}, timeout=10)
    posted.raise_for_status()
    while time.monotonic() - started < timeout_s:
        if not np.array_equal(ps.pull("user_id", ids)[0], before):
            return time.monotonic() - started
        time.sleep(poll_s)
    return None


class FreshnessProbe:
    """Probes every ``every_s`` seconds in a daemon thread; ``samples`` keeps the recent ones."""

    def __init__(self, base_url: str, ps, registry: CollectorRegistry | None = None, every_s: float = 10,
                 timeout_s: float = 60, first_user: int | None = None):
        self.base_url, self.ps, self.every_s, self.timeout_s = base_url, ps, every_s, timeout_s
        self.registry = registry or CollectorRegistry()
        self.seconds = Histogram("flywheel_freshness_seconds", "action arrival -> serving PS updated (s)",
                                 buckets=BUCKETS, registry=self.registry)
        self.probes = Counter("flywheel_freshness_probes", "freshness probes by result", ["result"],
                              registry=self.registry)
        self.samples: deque[float] = deque(maxlen=1000)
        self.next_user = first_user if first_user is not None else PROBE_BASE + int(time.time()) % 10**9 * 1000
        self.session = requests.Session()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def probe(self) -> float | None:
        """One probe: observe and return its seconds (None: timed out or failed, counted)."""
        user, self.next_user = self.next_user, self.next_user + 1
        try:
            seconds = probe_once(self.session, self.base_url, self.ps, user, self.timeout_s)
        except Exception as exc:  # server restarting, PS down: count it, try again next round
            self.probes.labels("error").inc()
            log.warning("freshness probe for user %s failed: %s", user, exc)
            return None
        if seconds is None:
            self.probes.labels("timeout").inc()
            log.warning("freshness probe: user %s not updated on the serving PS within %.0fs", user, self.timeout_s)
            return None
        self.probes.labels("fresh").inc()
        self.seconds.observe(seconds)
        self.samples.append(seconds)
        log.info("freshness %.2fs (user %s)", seconds, user)
        return seconds

    def quantiles(self, qs=(50, 99)) -> dict[str, float]:
        """``{"p50": s, "p99": s}`` over the recent samples (empty when there are none)."""
        if not self.samples:
            return {}
        values = np.percentile(np.array(self.samples), qs)
        return {f"p{q}": float(v) for q, v in zip(qs, values)}

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.probe()
            self._stop.wait(max(0.0, self.every_s - (time.monotonic() - started)))

    def start(self) -> FreshnessProbe:
        self._thread = threading.Thread(target=self._loop, name="freshness-probe", daemon=True)
        self._thread.start()
        return self

    def stop(self, wait: bool = True) -> None:
        """End the loop; with ``wait``, also the probe in flight (up to ``timeout_s``)."""
        self._stop.set()
        if wait and self._thread:
            self._thread.join(timeout=self.timeout_s + 5)
