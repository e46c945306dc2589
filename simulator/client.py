"""The model server as the simulator uses it: ``GET /feed`` and ``POST /events`` over HTTP.

What is retried (tenacity, exponential backoff from ``min_backoff_s`` to ``max_backoff_s``
seconds, until the caller's ``should_stop`` says the run is over):

- ``/feed`` 503: no champion model yet; ``/events`` 503: Kafka did not take the events;
- connection errors and timeouts: the server is restarting.

What is not: any other 4xx (the simulator sent something wrong: the body is logged and
counted as ``client_error``, the request dropped) and other 5xx (``server_error``, dropped).
A timed-out ``POST /events`` may have reached Kafka, so its retry can post actions twice
(at least once, like any app that retries).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, wait_exponential

from simulator.metrics import SimulatorMetrics
from streaming.schemas import Action

log = logging.getLogger(__name__)
T = TypeVar("T")


class NoModelYet(Exception):
    """``GET /feed`` answered 503: the server has no champion model yet."""


class Unavailable(Exception):
    """``POST /events`` answered 503: the server could not hand the events to Kafka."""


class GaveUp(Exception):
    """Retrying stopped because the run is over (``should_stop``); the request did not succeed."""


RETRYABLE = (NoModelYet, Unavailable, requests.ConnectionError, requests.Timeout)


@dataclass(frozen=True)
class Feed:
    """One served feed: its request ID (the join key of the actions on it) and the item IDs, top first."""

    request_id: str
    model_version: str
    items: list[int]


class ModelServerClient:
    """HTTP client of the model server, counting every attempt in ``metrics``.

    Args:
      base_url: e.g. ``http://127.0.0.1:8000``.
      metrics: where requests, actions and errors are counted.
      timeout_s: per HTTP request (connect and read), seconds.
      post_timeout_s: per ``POST /events``; longer than the server's wait for Kafka
        (``serving.events_ack_timeout_s``), so that a post is not retried while the server may
        still write it (None: ``timeout_s``).
      min_backoff_s, max_backoff_s: the first and the longest wait between retries, seconds.
      max_events: actions per ``POST /events`` (``serving.max_events``); more are split.
      should_stop: polled after each failed attempt; True ends the retries with :class:`GaveUp`.
      api_key: sent as ``X-API-Key`` (the server's ``serving.require_api_key``); None: no header.
      on_feed: called after each ``GET /feed`` attempt with (wall time sent, answered 200, seconds).
      on_accepted: called with the actions of each ``POST /events`` the server accepted (202);
        ``make chaos`` reconciles them against the topics (flywheel/chaos.py).
      on_unanswered: called with the actions of each ``POST /events`` attempt that got no HTTP
        answer (connection lost, timeout): the server may have written them before its crash.
    """

    def __init__(self, base_url: str, metrics: SimulatorMetrics, *, timeout_s: float = 5.0,
                 post_timeout_s: float | None = None,
                 min_backoff_s: float = 0.5, max_backoff_s: float = 30.0, max_events: int = 500,
                 should_stop: Callable[[], bool] = lambda: False, api_key: str | None = None,
                 on_feed: Callable[[float, bool, float], None] | None = None,
                 on_accepted: Callable[[list[Action]], None] | None = None,
                 on_unanswered: Callable[[list[Action]], None] | None = None):
        self.base_url = base_url.rstrip("/")
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.post_timeout_s = post_timeout_s or timeout_s
        self.wait = wait_exponential(multiplier=min_backoff_s, min=min_backoff_s, max=max_backoff_s)
        self.max_events = max_events
        self.should_stop = should_stop
        self.on_feed, self.on_accepted, self.on_unanswered = on_feed, on_accepted, on_unanswered
        self.http = requests.Session()
        if api_key:
            self.http.headers["X-API-Key"] = api_key

    def close(self) -> None:
        self.http.close()

    def feed(self, user_id: int, k: int) -> Feed | None:
        """The feed of ``k`` items for ``user_id``; None when the server refused the request (counted).

        Raises:
          GaveUp: the run ended while the server was unavailable.
        """
        return self._retried(f"GET /feed user {user_id}", lambda: self._get_feed(user_id, k))

    def post(self, actions: list[Action], late: bool = False) -> int:
        """Post ``actions`` (split into requests of ``max_events``); returns how many were accepted.

        Args:
          late: the actions were held back (counted in ``late_actions_total`` once accepted).

        Raises:
          GaveUp: the run ended while the server was unavailable.
        """
        accepted = 0
        for start in range(0, len(actions), self.max_events):
            chunk = actions[start:start + self.max_events]
            accepted += self._retried(f"POST /events ({len(chunk)} actions)", lambda: self._post_events(chunk, late))
        return accepted

    # -- one attempt each --------------------------------------------------------------------
    def _get_feed(self, user_id: int, k: int) -> Feed | None:
        started, sent = time.perf_counter(), time.time()
        try:
            response = self._send("GET", "/feed", params={"user_id": user_id, "k": k})
        except requests.RequestException:
            self.metrics.feed_requests.labels("error").inc()
            if self.on_feed:
                self.on_feed(sent, False, time.perf_counter() - started)
            raise
        self.metrics.feed_latency.observe(time.perf_counter() - started)
        if self.on_feed:
            self.on_feed(sent, response.status_code == 200, time.perf_counter() - started)
        self.metrics.feed_requests.labels(str(response.status_code)).inc()
        if response.status_code == 503:
            # with Retry-After: a transient refusal (feeds shed, the serving PS restarting); without: no model
            self.metrics.errors.labels("feed_unavailable" if "Retry-After" in response.headers else "no_model").inc()
            raise NoModelYet(_error_of(response))
        if response.status_code != 200:
            self._refused(response, f"GET /feed?user_id={user_id}&k={k}")
            return None
        try:
            body = response.json()
            return Feed(body["request_id"], body["model_version"], [int(x["item_id"]) for x in body["items"]])
        except (ValueError, KeyError, TypeError) as exc:
            self.metrics.errors.labels("server_error").inc()
            log.error("GET /feed?user_id=%s: a 200 answer that is no feed (%r): %s", user_id, exc, response.text[:2000])
            return None

    def _post_events(self, actions: list[Action], late: bool) -> int:
        body = {"events": [a.model_dump(mode="json", exclude_none=True) for a in actions]}
        try:
            response = self._send("POST", "/events", json=body, timeout=self.post_timeout_s)
        except requests.RequestException:
            if self.on_unanswered:
                self.on_unanswered(actions)
            raise
        if response.status_code == 503:
            self.metrics.errors.labels("unavailable").inc()
            raise Unavailable(_error_of(response))
        if response.status_code != 202:
            self._refused(response, f"POST /events with {len(actions)} actions")
            return 0
        for a in actions:
            self.metrics.actions.labels(a.action).inc()
        if self.on_accepted:
            self.on_accepted(actions)
        if late:
            self.metrics.late_actions.inc(len(actions))
        return len(actions)

    def _send(self, method: str, path: str, timeout: float | None = None, **kwargs) -> requests.Response:
        """One HTTP request; a connection error or timeout is counted and re-raised for the retry."""
        try:
            return self.http.request(method, self.base_url + path, timeout=timeout or self.timeout_s, **kwargs)
        except requests.RequestException as exc:
            self.metrics.errors.labels("timeout" if isinstance(exc, requests.Timeout) else "connection").inc()
            raise

    def _refused(self, response: requests.Response, what: str) -> None:
        kind = "client_error" if response.status_code < 500 else "server_error"
        self.metrics.errors.labels(kind).inc()
        log.error("%s: the server answered %s %s%s", what, response.status_code, response.text[:2000],
                  " (a bug in the simulator: fix the request)" if kind == "client_error" else "")

    # -- retries -----------------------------------------------------------------------------
    def _retried(self, what: str, attempt: Callable[[], T]) -> T:
        retrying = Retrying(retry=retry_if_exception_type(RETRYABLE), wait=self.wait,
                            stop=lambda state: self.should_stop(), before_sleep=_log_retry(what))
        try:
            return retrying(attempt)
        except RetryError as exc:
            raise GaveUp(f"{what}: gave up as the run ended ({exc.last_attempt.exception()})") from None


def _error_of(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    return str(body["error"]) if isinstance(body, dict) and "error" in body else response.text[:500]


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        log.warning("%s: %s; retry %d in %.1f s", what, state.outcome.exception() if state.outcome else "?",
                    state.attempt_number, state.next_action.sleep if state.next_action else 0)
    return before_sleep
