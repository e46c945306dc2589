"""The model server: the feed API and the event collector (FastAPI; OpenAPI docs at /docs).

- ``GET /feed?user_id=&k=``: Deep Retrieval then MMoE (serving/feed.py) with the ``champion``
  model and the serving PS's embeddings; each shown item's features go to Kafka ``features``
  under the response's ``request_id``. The candidates' rows come from a cache refreshed every
  ``serving.candidate_rows_refresh_s`` (serving/candidate_rows.py), the user's from the PS per
  feed. 503 until a champion exists, and (with Retry-After) while the serving PS does not answer.
- ``POST /events``: actions (the ``Action`` schema of streaming/schemas.py: one object, a
  list, or ``{"events": [...]}``), validated all-or-nothing, produced to Kafka ``actions``
  keyed by user, and acknowledged (202) only once Kafka has them. A click, like, finish or
  share also enters the user's history slot.
- ``GET /health``: the loaded model version and when it was loaded.
- ``GET /metrics``: Prometheus metrics (serving/metrics.py lists them).

The server binds ``stack.bind`` (loopback by default). With ``serving.require_api_key`` the feed,
the event collector and the demo page's API answer 401 unless the request's ``X-API-Key``
header holds the key (``FLYWHEEL_API_KEY``, else the state dir's secrets file: flywheel/secrets.py);
a non-loopback bind without it is refused by the config check.

Feeds are computed by ``feed_workers`` threads in arrival order (the event loop hands them
over). Limits (``serving`` config): ``k <= max_k``; ``max_events`` per request; bodies over
``max_body_bytes`` get 413; beyond ``max_inflight_feeds`` feeds in progress or waiting a feed
request is shed at once (503 with ``Retry-After``) rather than queued behind work it would only
slow down.
Errors say what, where and what to do.

Run: ``flywheel serve`` (binds ``stack.bind``, port ``serving.port``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from prometheus_client import make_asgi_app
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from flywheel.config import FlywheelConfig
from flywheel import joiner_job, secrets
from serving import demo
from serving.candidate_rows import CandidateRows
from serving.catalogue import Catalogue
from serving.arms import TrafficSplit, Trending
from serving.feed import FeedBuilder, NoModel, log_features
from serving.history import Histories
from serving.metrics import ServingMetrics
from serving.panels import Panels
from paramserver.client import TRANSIENT as PS_DOWN
from streaming.schemas import INT63_MAX, TASK_OF_ACTION, Action, SchemaError, encode, key_of, parse_action, wire_schema

log = logging.getLogger(__name__)


class FeedItem(BaseModel):
    item_id: int
    position: int
    score: float
    scores: dict[str, float]
    title: str
    genres: list[str]
    path: list[int] | None = None  # Deep Retrieval path (a code per layer); null: filled from the catalogue


class FeedResponse(BaseModel):
    request_id: str
    model_version: str
    user_id: int
    items: list[FeedItem]


class EventsAccepted(BaseModel):
    accepted: int


class Problem(BaseModel):
    """Every error the server answers: what went wrong, where, and what to do."""

    error: str
    invalid: list[dict] | None = None  # POST /events 422: per event, its index, reason, field and message


def documented(*statuses: int) -> dict:
    """The OpenAPI ``responses`` of an operation's error statuses (all carry a :class:`Problem`)."""
    what = {400: "bad request", 401: "missing or wrong X-API-Key", 413: "too large", 422: "invalid input",
            503: "not now: no champion yet, shed, the serving PS restarting, or Kafka down; retry"}
    return {code: {"model": Problem, "description": what[code]} for code in statuses}


def events_body(max_events: int) -> dict:
    """The OpenAPI request body of POST /events (the handler reads the raw body itself, to give
    per-event reasons): one action, a list, or ``{"events": [...]}``."""
    action = wire_schema(Action)
    many = {"type": "array", "items": action, "minItems": 1, "maxItems": max_events}
    return {"requestBody": {"required": True, "description": "integers are written without a fraction (1, not 1.0)",
                            "content": {"application/json": {"schema": {"anyOf": [
        action, many, {"type": "object", "properties": {"events": many}, "required": ["events"],
                       "additionalProperties": False}]}}}}}


class Unauthorized(Exception):
    """A request without the model server's API key (``serving.require_api_key``)."""


API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="the model server's key when serving.require_api_key is on")


def api_key_guard(cfg: FlywheelConfig, metrics: ServingMetrics) -> list:
    """The dependencies of a guarded route: one that lets a request through only with the
    right ``X-API-Key``, or none when ``serving.require_api_key`` is off (then the OpenAPI spec
    declares no security either)."""
    if not cfg.serving.require_api_key:
        return []
    expected = secrets.value(cfg, secrets.API_KEY).encode()

    async def authorized(key: str | None = Security(API_KEY_HEADER)) -> None:
        if not key or not hmac.compare_digest(key.encode(), expected):
            metrics.unauthorized.inc()
            raise Unauthorized("missing" if not key else "wrong")

    return [Depends(authorized)]


def problem(status: int, message: str, headers: dict[str, str] | None = None, **details) -> JSONResponse:
    return JSONResponse({"error": message, **details}, status_code=status, headers=headers)


class ActionsProducer:
    """The event collector's Kafka producer, started afresh after a send that failed.

    An idempotent producer whose records expired unsent (Kafka down longer than
    ``serving.events_ack_timeout_s``) resets its producer id and, in kafka-python, can stay
    unable to send afterwards; a new producer (a new producer id) starts clean. The records
    of the failed send were answered 503 and are the client's to retry.

    Args:
      make: a function returning a new producer, or one fixed producer (tests), never replaced.
    """

    def __init__(self, make):
        self._make = make if callable(make) else None
        self._fixed = None if callable(make) else make
        self._current = None
        self._lock = threading.Lock()

    @property
    def current(self):
        """The producer to send with, or None when one must be made first (:meth:`get`)."""
        return self._fixed if self._fixed is not None else self._current

    def get(self):
        """The producer to send with (made now if the last one was discarded); raises while
        Kafka cannot be reached (NoBrokersAvailable)."""
        if self._fixed is not None:
            return self._fixed
        with self._lock:
            if self._current is None:
                self._current = self._make()
            return self._current

    def discard(self, producer) -> None:
        """Drop ``producer`` after a failed send (if it is still the current one); closed in the
        background, without waiting for what it still holds."""
        if producer is None or producer is self._fixed:
            return
        with self._lock:
            if self._current is producer:
                self._current = None
        threading.Thread(target=producer.close, kwargs={"timeout": 0}, name="actions-producer-close",
                         daemon=True).start()

    def close(self) -> None:
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            current.close(timeout=10)


async def acknowledged(futures, timeout_s: float) -> None:
    """Wait until Kafka acknowledged every record of ``futures`` (kafka-python's produce futures)
    without blocking the event loop: each future's callback completes an asyncio future from the
    producer's I/O thread. Raises the first record's error, or TimeoutError."""
    loop = asyncio.get_running_loop()
    waiters = []
    for future in futures:
        waiter = loop.create_future()

        def settle(result, waiter=waiter):
            def set_():
                if not waiter.done():
                    (waiter.set_exception if isinstance(result, BaseException) else waiter.set_result)(result)
            loop.call_soon_threadsafe(set_)
        future.add_callback(settle).add_errback(settle)
        waiters.append(waiter)
    await asyncio.wait_for(asyncio.gather(*waiters), timeout_s)


def create_app(cfg: FlywheelConfig, source=None, loader=None, producer=None, catalogue: Catalogue | None = None) -> FastAPI:
    """The app over the serving PS (``source``), the champion ``loader`` and a Kafka ``producer``;
    each defaults to the stack's (created at startup, closed at shutdown)."""
    s = cfg.serving
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from kafka import KafkaProducer

        from paramserver.client import PSClient
        from serving.loader import ChampionLoader

        ps = source or PSClient.from_config(cfg, role="serving")
        state["loader"] = loader or ChampionLoader(cfg, ps, interval_s=s.reload_interval_s)
        if loader is None:
            try:
                state["loader"].poll()
            except Exception:  # MLflow down or no model: serve 503 until the next poll loads one
                log.exception("no champion loaded at start; retrying every %ss", s.reload_interval_s)
            state["loader"].start()
        # actions are acknowledged to the client once Kafka has them: sent at once; served
        # features go through their own producer, batched longer (fewer sends for its I/O
        # thread, which otherwise takes the GIL from the feed workers hundreds of times a second)
        # idempotent: a send the producer retries after a broker failure is written once
        # ... and given up within the wait of POST /events, so that a 503 (the client retries) is
        # not followed by the same records written late from the buffer (a double)
        wait_ms = int(s.events_ack_timeout_s * 1000)
        state["producer"] = ActionsProducer(producer or (lambda: KafkaProducer(
            **secrets.kafka_args(cfg, "serving"), acks="all", linger_ms=5, retries=5, enable_idempotence=True,
            request_timeout_ms=wait_ms - 500, delivery_timeout_ms=wait_ms)))
        try:
            state["producer"].get()  # now, so that the first action does not wait for it
        except Exception as exc:  # noqa: BLE001 - Kafka down: /events answers 503 and tries again per post
            log.warning("no Kafka producer for actions yet (%s); POST /events answers 503 until Kafka is back", exc)
        state["features"] = producer or KafkaProducer(**secrets.kafka_args(cfg, "serving"), acks="all",
                                                      linger_ms=s.features_linger_ms, retries=5,
                                                      enable_idempotence=True)
        state["workers"] = ThreadPoolExecutor(max_workers=s.feed_workers, thread_name_prefix="feed")
        state["candidate_rows"] = CandidateRows(ps, s.candidate_rows_refresh_s).start() \
            if s.candidate_rows_refresh_s > 0 else None
        if state["candidate_rows"] is not None:
            metrics.watch_candidate_rows(state["candidate_rows"])
        items = catalogue or Catalogue.load(s.catalogue, cfg.data.format, cfg.data.actions)
        state["feed"] = FeedBuilder(state["loader"], items,
                                    Histories(per_user=s.history), s.candidates, s.task_weights,
                                    state["candidate_rows"], s.forward, TrafficSplit(s.traffic, s.traffic_salt),
                                    Trending(cfg.batch.popular_window_h * 3600))
        state["panels"] = Panels(cfg, metrics.samples, state["loader"], joiner_job.job_name(cfg))
        yield
        state["workers"].shutdown(wait=True)
        if state["candidate_rows"] is not None:
            state["candidate_rows"].stop()
        if loader is None:
            state["loader"].stop()
        if producer is None:
            state["producer"].close()
            state["features"].close(timeout=10)

    app = FastAPI(title="Flywheel model server", version="1", lifespan=lifespan,
                  description="Feeds (Deep Retrieval + MMoE) and the event collector. See serving/app.py.")
    metrics = ServingMetrics()
    app.state.metrics = metrics
    admission = threading.BoundedSemaphore(s.max_inflight_feeds)
    app.mount("/metrics", make_asgi_app(metrics.registry))
    guard = api_key_guard(cfg, metrics)
    demo.mount(app, state, guard)

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized):
        return problem(401, f"{exc} X-API-Key header: {request.url.path} needs the model server's key "
                            f"({secrets.API_KEY.env}; `flywheel status` says where it is kept)",
                       headers={"WWW-Authenticate": "ApiKey"})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        if request.url.path == "/feed":
            metrics.feed_requests.labels("422").inc()
        return await request_validation_exception_handler(request, exc)

    @app.get("/feed", response_model=FeedResponse, dependencies=guard, responses=documented(401, 422, 503))
    async def feed(user_id: int = Query(..., ge=0, le=INT63_MAX, description="the user, 0..2^63-1"),
                   k: int = Query(10, ge=1, le=s.max_k, description=f"items to return, 1..{s.max_k}")):
        started = time.perf_counter()
        current = state["loader"].current
        metrics.model(current.version if current else None, current.loaded_at if current else None)
        if not admission.acquire(blocking=False):
            metrics.shed.inc()
            metrics.feed_requests.labels("503").inc()
            return problem(503, f"{s.max_inflight_feeds} feeds are in progress (serving.max_inflight_feeds); "
                                "retry after a second", headers={"Retry-After": "1"})
        metrics.in_flight.inc()
        try:  # on the feed workers, in arrival order: the event loop only hands requests over
            return await asyncio.get_running_loop().run_in_executor(state["workers"], build_feed, user_id, k, started)
        finally:
            metrics.in_flight.dec()
            admission.release()

    def build_feed(user_id: int, k: int, started: float):
        builder: FeedBuilder = state["feed"]
        timings: dict[str, float] = {"queue": time.perf_counter() - started}
        try:
            request_id, version, served = builder.build(user_id, k, timings)
        except NoModel as exc:
            metrics.feed_requests.labels("503").inc()
            return problem(503, str(exc))
        except PS_DOWN as exc:  # the serving PS restarts (its client already retried): a 503 to retry, not a 500
            metrics.feed_requests.labels("503").inc()
            metrics.ps_unavailable.inc()
            log.warning("feed for user %s: the serving PS did not answer: %s", user_id, exc)
            return problem(503, f"the serving parameter server did not answer ({type(exc).__name__}); retry in a second",
                           headers={"Retry-After": "1"})
        built = time.perf_counter()
        log_features(state["features"], s.features_topic, served)
        timings["log"] = time.perf_counter() - built
        for stage, seconds in timings.items():
            metrics.feed_latency.labels(stage).observe(seconds)
        metrics.feed_latency.labels("total").observe(time.perf_counter() - started)
        metrics.feed_requests.labels("200").inc()
        metrics.feed_items.inc(len(served))
        cat = builder.catalogue
        return FeedResponse(request_id=request_id, model_version=version, user_id=user_id, items=[
            FeedItem(item_id=x.item_id, position=x.position, score=x.score, scores=x.scores,
                     title=cat.title(x.item_id), genres=cat.genre_labels(x.item_id),
                     path=list(x.path) if x.path is not None else None) for x in served])

    @app.post("/events", response_model=EventsAccepted, status_code=202, dependencies=guard,
              responses=documented(400, 401, 413, 422, 503), openapi_extra=events_body(s.max_events))
    async def events(request: Request):
        declared = int(request.headers.get("content-length") or 0)
        if declared > s.max_body_bytes:
            metrics.events.labels("refused").inc()
            return problem(413, f"body of {declared} bytes; the limit is {s.max_body_bytes}: send fewer events per request")
        body = await request.body()
        if len(body) > s.max_body_bytes:
            metrics.events.labels("refused").inc()
            return problem(413, f"body of {len(body)} bytes; the limit is {s.max_body_bytes}: send fewer events per request")
        try:
            data = json.loads(body)
        except ValueError as exc:
            metrics.events.labels("invalid").inc()
            metrics.invalid.labels("not_json").inc()
            return problem(400, f"the body is not JSON: {exc}; send an action object, a list of them, or {{\"events\": [...]}}")
        batch = data.get("events") if isinstance(data, dict) and "events" in data else data
        batch = batch if isinstance(batch, list) else [batch]
        if not batch or len(batch) > s.max_events:
            metrics.events.labels("refused").inc()
            return problem(400 if not batch else 413, f"{len(batch)} events; send 1..{s.max_events} per request")
        actions, errors = [], []
        for n, event in enumerate(batch):
            try:
                actions.append(parse_action(json.dumps(event)))
            except SchemaError as err:
                errors.append({"index": n, "reason": err.reason, "field": err.field, "message": str(err)})
        if errors:
            metrics.events.labels("invalid").inc(len(batch))
            for e in errors:
                metrics.invalid.labels(e["reason"]).inc()
            return problem(422, f"{len(errors)} of {len(batch)} events are invalid; nothing was accepted",
                           invalid=errors)
        actions_producer: ActionsProducer = state["producer"]
        kafka = None
        try:  # a new producer is made in a thread: it dials the brokers, which must not block the event loop
            kafka = actions_producer.current
            if kafka is None:
                kafka = await asyncio.get_running_loop().run_in_executor(None, actions_producer.get)
            futures = [kafka.send(s.actions_topic, key=key_of(a), value=encode(a)) for a in actions]
            await acknowledged(futures, timeout_s=s.events_ack_timeout_s + 1)  # the producer fails them first
        except Exception as exc:  # Kafka down: the client retries; nothing is acknowledged
            actions_producer.discard(kafka)
            metrics.events.labels("unavailable").inc(len(actions))
            return problem(503, f"Kafka did not take the events ({type(exc).__name__}: {exc}); retry later")
        metrics.events.labels("accepted").inc(len(actions))
        for a in actions:
            if a.action in TASK_OF_ACTION:
                state["feed"].histories.add(a.user_id, a.item_id)
            if a.action == "click":
                state["feed"].trending.click(a.item_id, a.event_time)
        return EventsAccepted(accepted=len(actions))

    @app.get("/health")
    def health():
        current = state["loader"].current
        return {"model_version": current.version if current else None,
                "loaded_at": current.loaded_at if current else None, "time": time.time(),
                "forward": state["feed"].forward_in_use}

    return app
