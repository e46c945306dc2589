"""The live demo page (``GET /demo``) and the small JSON API behind it, on the model server.

The page itself (``serving/static/``: plain HTML, CSS and JS, every item text set as text,
never as markup) asks for feeds from the real ``/feed`` and posts actions to the real
``/events``; what it needs besides those comes from here:

- ``GET /demo/api/users``: some known (simulated) users to act as, and a fresh ID for a new
  user (cold start);
- ``GET /demo/api/users/{user_id}/embedding``: the user's row on the serving PS, and when the
  model server saw it change (checked at each request, so within the page's poll period): the
  loop closing, action -> join -> train -> sync -> serving;
- ``GET /demo/api/panels``: every component's live figures (:mod:`serving.panels`).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from fastapi import APIRouter, HTTPException, Path as PathParam
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from streaming.schemas import INT63_MAX

STATIC = Path(__file__).resolve().parent / "static"
NEW_USERS = (10**12, 2 * 10**12)  # fresh IDs for "new user": far above MovieLens' and the probes'


class EmbeddingWatch:
    """Per user: a digest of the serving row and when it last changed (bounded, LRU)."""

    def __init__(self, users: int = 10_000):
        self.users = users
        self._seen: OrderedDict[int, tuple[str, float | None]] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, user: int, row: np.ndarray, now: float) -> dict:
        has_row = bool(np.any(row))
        digest = hashlib.blake2b(np.ascontiguousarray(row, np.float32).tobytes(), digest_size=8).hexdigest()
        with self._lock:
            before = self._seen.pop(user, None)
            changed = before[1] if before and before[0] == digest else (now if before else None)
            self._seen[user] = (digest, changed)
            while len(self._seen) > self.users:
                self._seen.popitem(last=False)
        return {"user_id": user, "has_row": has_row, "digest": digest, "norm": round(float(np.linalg.norm(row)), 6),
                "changed_at": changed, "checked_at": now}


def user_table(model) -> str:
    """The PS table holding user-ID rows (the ranker's ``user`` slot)."""
    return next(s.table for s in model.ranker.slots if s.name == "user")


def router(state: dict, guard: list | None = None) -> APIRouter:
    """Over the app's ``state`` (filled at startup): ``loader`` (the champion; its model's
    source is the serving PS), ``feed`` (its catalogue) and ``panels``. ``guard``: the
    dependencies of every ``/demo/api`` route (the API key); the page itself is public."""
    api = APIRouter(prefix="/demo", tags=["demo page"])
    watch = EmbeddingWatch()
    rng = random.Random()

    @api.get("", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "demo.html", media_type="text/html")

    @api.get("/api/users", dependencies=guard)
    def users(n: int = 30):
        known = sorted(state["feed"].catalogue.users)[: max(0, min(n, 500))]
        return {"known": known, "new_user": rng.randrange(*NEW_USERS)}

    @api.get("/api/users/{user_id}/embedding", dependencies=guard)
    def embedding(user_id: int = PathParam(..., ge=0, le=INT63_MAX)):
        model = state["loader"].current
        if model is None:
            raise HTTPException(503, "no champion loaded yet: run the daily retrain (make retrain)")
        try:
            row = model.retriever.source.pull(user_table(model), np.array([user_id], np.uint64))[0]
        except Exception as exc:  # noqa: BLE001 - the serving PS is down: say so, keep the page up
            raise HTTPException(503, f"the serving PS did not answer ({type(exc).__name__}: {exc}); retry") from exc
        return watch.observe(user_id, row, time.time())

    @api.get("/api/panels", dependencies=guard)
    def read_panels():
        return state["panels"].read()

    return api


def mount(app, state: dict, guard: list | None = None) -> None:
    app.include_router(router(state, guard))
    app.mount("/demo/static", StaticFiles(directory=STATIC), name="demo-static")
