"""Scraping the loop's metrics: samples over real HTTP, sums by label, and histogram
quantiles over the window between two scrapes."""

import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app

from flywheel.prometheus import histogram_quantiles, scrape, value


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    registry = CollectorRegistry()
    server = make_server("127.0.0.1", 0, make_wsgi_app(registry), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield registry, f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()


def test_samples_sums_and_window_quantiles(endpoint):
    registry, url = endpoint
    requests_ = Counter("feeds", "feeds", ["status"], registry=registry)
    latency = Histogram("lat_seconds", "latency", ["stage"], buckets=(0.01, 0.02, 0.05), registry=registry)
    requests_.labels("200").inc(3)
    requests_.labels("503").inc()
    for _ in range(50):
        latency.labels("rank").observe(0.5)  # before the window: must not count
    before = scrape(url)
    for s in (0.005,) * 50 + (0.015,) * 49 + (0.04,):
        latency.labels("rank").observe(s)
    after = scrape(url)
    assert value(after, "feeds_total", status="200") == 3 and value(after, "feeds_total") == 4
    assert value(after, "missing_total") == 0
    q = histogram_quantiles(before, after, "lat_seconds", "stage")["rank"]
    assert q["count"] == 100 and q["mean_ms"] == pytest.approx((50 * 5 + 49 * 15 + 40) / 100)
    assert q["p50_ms"] == pytest.approx(10.0) and 10 < q["p99_ms"] <= 20
    latency.labels("rank").observe(1.0)
    assert histogram_quantiles(after, scrape(url), "lat_seconds", "stage", qs=(99,))["rank"]["p99_ms"] == ">50"


def test_an_endpoint_that_does_not_answer_has_no_samples():
    assert scrape("http://127.0.0.1:9/metrics", timeout_s=1) == []
