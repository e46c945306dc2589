"""An online A/B test inside the product: each user is served by one arm, and the arm is
written into the features of everything it served.

- :class:`TrafficSplit`: ``serving.traffic`` (arm -> share of users) and a stable hash of the
  user ID, so a user stays in one arm across requests and restarts of the model server.
- Arms: ``champion`` (Deep Retrieval + MMoE of the ``champion`` alias) and ``popularity`` (the
  most clicked items in a trailing window, counted live: :class:`Trending`), the baseline every
  learned model must beat in the live loop as in the offline figures.
- The arm travels in the served features' ``model_version``: ``popularity:<window>`` for the
  popularity arm; the champion's stays its version (``flywheel/7``). :func:`arm_of` reads it
  back, in the joiner's examples as on the online trainer's side, which measures each arm's
  rates from the joined examples (pipelines/online/arms.py).
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import threading
import time

from flywheel.config import ARMS, check_traffic
from streaming.schemas import arm_of

__all__ = ["ARMS", "TrafficSplit", "Trending", "arm_of"]


class TrafficSplit:
    """Users to arms by configured shares (see the module docstring).

    Args:
      shares: arm -> share of users, each >= 0, summing to 1.
      salt: a new salt reshuffles users (a new experiment); the same salt keeps them.
    """

    def __init__(self, shares: dict[str, float], salt: str = "flywheel-ab"):
        check_traffic(shares)
        self.shares, self.salt = {a: float(v) for a, v in shares.items() if v > 0}, salt

    def arm(self, user_id: int) -> str:
        """The user's arm: a hash of (salt, user) in [0, 1) against the cumulative shares."""
        digest = hashlib.blake2b(f"{self.salt}:{user_id}".encode(), digest_size=8).digest()
        point, edge = int.from_bytes(digest, "big") / 2**64, 0.0
        for arm, share in self.shares.items():
            edge += share
            if point < edge:
                return arm
        return next(reversed(self.shares))  # rounding at the top edge


class Trending:
    """Items by clicks in the trailing ``window_s`` (event time), counted from the actions the
    model server accepts, plus the champion bundle's recent clicks (``base``, as the daily
    retrain counted them) fading out over one window from when they were set: a start or
    restart serves what was popular at the retrain, not whatever was clicked first. An event
    time ahead of the server's clock counts as now (one bad clock cannot stall the window).
    Thread-safe.
    """

    AHEAD_S = 60  # client clocks may run this far ahead of the server's

    def __init__(self, window_s: float, clock=time.time):
        self.window_s, self.clock = window_s, clock
        self.base: dict[int, float] = {}
        self._base_at = clock()
        self._clicks: collections.deque = collections.deque()  # (event_time_ms, item), in arrival order
        self._counts: collections.Counter = collections.Counter()
        self._now_ms = 0  # the newest click's event time
        self._lock = threading.Lock()

    def set_base(self, items, counts) -> None:
        with self._lock:
            self.base = {int(i): float(c) for i, c in zip(items, counts)}
            self._base_at = self.clock()

    def click(self, item: int, event_time_ms: int) -> None:
        """Count a click; one older than the window (a late action) is not counted."""
        with self._lock:
            event_time_ms = min(event_time_ms, int((self.clock() + self.AHEAD_S) * 1000))
            self._now_ms = max(self._now_ms, event_time_ms)
            start = self._now_ms - self.window_s * 1000
            if event_time_ms < start:
                return
            self._clicks.append((event_time_ms, int(item)))
            self._counts[int(item)] += 1
            while self._clicks and self._clicks[0][0] < start:  # arrival order: a straggler may wait a little
                _, old = self._clicks.popleft()
                self._counts[old] -= 1
                if not self._counts[old]:
                    del self._counts[old]

    def top(self, k: int, exclude: set[int] = frozenset()) -> list[tuple[int, float]]:
        """The ``k`` best items not in ``exclude``: (item, score = live clicks + fading base)."""
        with self._lock:
            counts, base = dict(self._counts), self.base
            fade = max(0.0, 1 - (self.clock() - self._base_at) / self.window_s)
        scores = {i: fade * c for i, c in base.items()}
        for i, c in counts.items():
            scores[i] = scores.get(i, 0.0) + c
        best = heapq.nsmallest(k + len(exclude), scores, key=lambda i: (-scores[i], i))
        return [(i, scores[i]) for i in best if i not in exclude][:k]
