"""Late actions: a share of the actions is held back and posted some seconds after it happened.

Apps buffer events offline and send them later; the joiner must still join them (its
watermark and label window) or correct a negative it already emitted. A held-back action
keeps its original ``event_time`` (ms); only the moment it is posted moves.
"""

from __future__ import annotations

import heapq
import itertools

import numpy as np

from streaming.schemas import Action


def split_late(actions: list[Action], share: float, rng: np.random.Generator) -> tuple[list[Action], list[Action]]:
    """Split ``actions`` into (post now, hold back): each is held back with probability ``share``."""
    if share <= 0 or not actions:
        return list(actions), []
    late = rng.random(len(actions)) < share
    return [a for a, x in zip(actions, late) if not x], [a for a, x in zip(actions, late) if x]


class LateActions:
    """Held-back actions, each due ``delay_s`` seconds after it was held (monotonic clock).

    Args:
      delay_s: how long an action is held, seconds.
    """

    def __init__(self, delay_s: float):
        if delay_s < 0:
            raise ValueError(f"late delay {delay_s} s: expected >= 0")
        self.delay_s = delay_s
        self._heap: list[tuple[float, int, Action]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def hold(self, actions: list[Action], now: float) -> None:
        """Hold ``actions``, due at ``now + delay_s`` (``now`` in seconds of a monotonic clock)."""
        for action in actions:
            heapq.heappush(self._heap, (now + self.delay_s, next(self._order), action))

    def next_due(self) -> float | None:
        """When the earliest held action is due, or None when none is held."""
        return self._heap[0][0] if self._heap else None

    def last_due(self) -> float | None:
        """When the latest held action is due, or None when none is held."""
        return max(due for due, _, _ in self._heap) if self._heap else None

    def due(self, now: float) -> list[Action]:
        """Take the actions due by ``now``, in the order they were held."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def take_all(self) -> list[Action]:
        """Take every held action, due or not."""
        out = [a for _, _, a in sorted(self._heap)]
        self._heap.clear()
        return out
