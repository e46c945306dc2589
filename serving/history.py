"""Each user's recently acted-on items, the ``history`` slot of the feed's features.

Kept in the model server's memory, bounded: ``per_user`` items per user, ``users`` users
(least recently active forgotten first). A restarted server starts with empty histories; the
user's embedding in the PS still carries what was learned.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque


class Histories:
    def __init__(self, per_user: int = 10, users: int = 100_000):
        self.per_user, self.users = per_user, users
        self._items: OrderedDict[int, deque[int]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, user: int, item: int) -> None:
        with self._lock:
            recent = self._items.pop(user, None) or deque(maxlen=self.per_user)
            if item in recent:
                recent.remove(item)
            recent.append(item)
            self._items[user] = recent
            while len(self._items) > self.users:
                self._items.popitem(last=False)

    def get(self, user: int) -> list[int]:
        """Oldest first, at most ``per_user``."""
        with self._lock:
            return list(self._items.get(user, ()))
