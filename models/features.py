"""The feature scheme every component shares: which sparse slots an example carries, the
parameter-server table each slot's IDs live in, and the tasks the ranker learns.

The backfill writes examples with these slots, the model server serves them (and logs them
to ``features``), batch and online training read them: one list, so they cannot drift.
Feature IDs are namespaced per table (item- and user-attribute IDs share the ``attr`` table
as hashes of distinct prefixes, see ``datasets.history.attr_id``).
"""

from __future__ import annotations

from models.sparse import Slot

USER_SLOTS = [Slot("user", "user_id"), Slot("history", "item_id"), Slot("user_attr", "attr")]
ITEM_SLOTS = [Slot("item", "item_id"), Slot("genre", "attr")]
RANK_SLOTS = USER_SLOTS + ITEM_SLOTS
DENSE: list[str] = []  # dense features by name (none yet; missing ones read 0)
RANK_TASKS = ["click", "like", "finish"]  # the ranker's heads; "share" has no signal in MovieLens
HISTORY = 10  # items in the history slot, newest last
