"""The model server's Prometheus metrics (``GET /metrics``), one registry per app.

| metric | type | unit, meaning |
|---|---|---|
| ``flywheel_serving_feed_requests_total{status}`` | counter | feed requests by HTTP status (``503`` also when shed) |
| ``flywheel_serving_feeds_shed_total`` | counter | feed requests refused because ``serving.max_inflight_feeds`` were in progress |
| ``flywheel_serving_feeds_in_flight`` | gauge | feed requests being computed now |
| ``flywheel_serving_feed_latency_seconds{stage}`` | histogram | seconds per request: ``queue`` (waiting for a feed worker), ``retrieve`` (Deep Retrieval beam), ``rank`` (MMoE), ``log`` (features handed to the Kafka producer), ``total`` |
| ``flywheel_serving_feed_items_total`` | counter | items served (and logged to Kafka ``features``) |
| ``flywheel_serving_events_total{result}`` | counter | actions posted: ``accepted``, ``invalid``, ``refused`` (size limits), ``unavailable`` (Kafka down) |
| ``flywheel_serving_invalid_events_total{reason}`` | counter | invalid actions by schema reason |
| ``flywheel_serving_ps_unavailable_total`` | counter | feeds answered 503 because the serving PS did not answer (it restarts) |
| ``flywheel_serving_unauthorized_total`` | counter | requests refused for a missing or wrong ``X-API-Key`` (``serving.require_api_key``) |
| ``flywheel_serving_candidate_rows`` | gauge | candidates' embedding rows cached in the server (serving/candidate_rows.py) |
| ``flywheel_serving_candidate_rows_age_seconds`` | gauge | seconds since those rows were last re-pulled from the serving PS (bounds how stale they are; grows while the PS is down) |
| ``flywheel_serving_model_info{version}`` | gauge | 1 for the model version being served |
| ``flywheel_serving_model_loaded_timestamp_seconds`` | gauge | when that version was loaded (unix s) |
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    """The model server's metrics (see the module docstring)."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.feed_requests = Counter("flywheel_serving_feed_requests", "feed requests by HTTP status", ["status"],
                                     registry=r)
        self.feed_latency = Histogram("flywheel_serving_feed_latency_seconds", "feed latency per stage (s)",
                                      ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.shed = Counter("flywheel_serving_feeds_shed", "feeds refused: too many in flight", registry=r)
        self.ps_unavailable = Counter("flywheel_serving_ps_unavailable", "feeds answered 503: the serving PS did "
                                      "not answer (restarting)", registry=r)
        self.in_flight = Gauge("flywheel_serving_feeds_in_flight", "feeds being computed now", registry=r)
        self.feed_items = Counter("flywheel_serving_feed_items", "items served and logged", registry=r)
        self.events = Counter("flywheel_serving_events", "actions posted, by result", ["result"], registry=r)
        self.invalid = Counter("flywheel_serving_invalid_events", "invalid actions by reason", ["reason"], registry=r)
        self.unauthorized = Counter("flywheel_serving_unauthorized", "requests without the right X-API-Key",
                                    registry=r)
        self.model_info = Gauge("flywheel_serving_model_info", "the model version served", ["version"], registry=r)
        self.model_loaded = Gauge("flywheel_serving_model_loaded_timestamp_seconds", "when it was loaded (unix s)",
                                  registry=r)
        self.candidate_rows = Gauge("flywheel_serving_candidate_rows", "candidates' rows cached", registry=r)
        self.candidate_rows_age = Gauge("flywheel_serving_candidate_rows_age_seconds",
                                        "seconds since the cached rows were re-pulled", registry=r)
        self._version: str | None = None

    def watch_candidate_rows(self, cache) -> None:
        """Export the size and age of the server's :class:`serving.candidate_rows.CandidateRows`."""
        self.candidate_rows.set_function(lambda: len(cache))
        self.candidate_rows_age.set_function(cache.age)

    def model(self, version: str | None, loaded_at: float | None) -> None:
        """Point ``model_info`` at ``version`` (called per request; cheap when unchanged)."""
        if version == self._version:
            return
        if self._version is not None:
            self.model_info.remove(self._version)
        if version is not None:
            self.model_info.labels(version).set(1)
            self.model_loaded.set(loaded_at or 0)
        self._version = version

    def samples(self) -> list:
        """Every sample of the registry, as a scrape of ``/metrics`` would give them."""
        return [s for family in self.registry.collect() for s in family.samples]
