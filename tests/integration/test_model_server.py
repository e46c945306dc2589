"""The model server over real HTTP (uvicorn on loopback) and the real Kafka broker: feeds with
their features logged under the request id, actions collected, and bad requests refused with
4xx and reasons. The model is a small bundle trained here (MLflow publishing is covered by
test_daily_retrain)."""

import json
import os
import socket
import threading
import time
import uuid

import numpy as np
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic

from flywheel.secrets import kafka_args
from flywheel.stack import kafka_acls
from models.bundle import load_bundle
from paramserver.client import PSClient
from serving.app import create_app
from serving.catalogue import Catalogue
from serving.loader import Loaded
from tests.serving_models import DIMS, StaticLoader, tables, trained_loader

pytestmark = pytest.mark.integration
T = 1_750_000_000_000


class Server:
    def __init__(self, app, port: int):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "uvicorn did not start"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def read(stack, topic: str, count: int, timeout_s: float = 30) -> list:
    consumer = KafkaConsumer(topic, **kafka_args(stack), auto_offset_reset="earliest",
                             consumer_timeout_ms=1000)
    found, deadline = [], time.monotonic() + timeout_s
    while len(found) < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            found.extend(records)
    consumer.close()
    return found


@pytest.fixture(scope="module")
def server(stack, tmp_path_factory):
    tag = uuid.uuid4().hex[:6]
    topics = {"features_topic": f"it-serve-features-{tag}", "actions_topic": f"it-serve-actions-{tag}"}
    admin = KafkaAdminClient(**kafka_args(stack))
    admin.create_topics([NewTopic(t, 1, 1) for t in topics.values()])
    admin.close()
    cfg = stack.model_copy(update={"serving": stack.serving.model_copy(update={**topics, "max_events": 5,
                                                                               "max_body_bytes": 4096})})
    kafka_acls.ensure(cfg)  # the model server's grants on these topics
    source = tables()
    app = create_app(cfg, source=source, loader=trained_loader(tmp_path_factory.mktemp("bundle"), source),
                     catalogue=Catalogue(titles={3: "<b>Three</b>"}))
    s = Server(app, stack.serving.port)
    s.topics, s.source = topics, source
    yield s
    s.stop()


def action(user=5, item=3, kind="like", **over):
    return {"schema_version": 1, "request_id": "r1", "user_id": user, "item_id": item, "event_time": T,
            "action": kind, **over}


def test_a_feed_logs_each_served_item_to_kafka(stack, server):
    got = requests.get(f"{server.url}/feed", params={"user_id": 5, "k": 6}, timeout=30)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["model_version"] == "flywheel/7" and len(body["items"]) == 6
    assert [i["position"] for i in body["items"]] == list(range(6))
    logged = [json.loads(r.value) for r in read(stack, server.topics["features_topic"], 6)]
    assert len(logged) == 6 and {r["request_id"] for r in logged} == {body["request_id"]}
    assert sorted((r["position"], r["item_id"]) for r in logged) == [(i["position"], i["item_id"]) for i in body["items"]]
    assert all(r["user_id"] == 5 and r["sparse"]["user"] == [5] for r in logged)


def test_actions_are_collected_to_kafka_and_enter_the_history(stack, server):
    got = requests.post(f"{server.url}/events", json={"events": [action(), action(item=4, kind="skip")]}, timeout=30)
    assert got.status_code == 202 and got.json() == {"accepted": 2}
    records = read(stack, server.topics["actions_topic"], 2)
    assert [(r.key, json.loads(r.value)["item_id"]) for r in records] == [(b"5", 3), (b"5", 4)]
    feed = requests.get(f"{server.url}/feed", params={"user_id": 5, "k": 3}, timeout=30).json()
    logged = [json.loads(r.value) for r in read(stack, server.topics["features_topic"], 9)]
    assert all(r["sparse"]["history"] == [3] for r in logged if r["request_id"] == feed["request_id"])


@pytest.mark.parametrize("method, path, kwargs, status, words", [
    ("get", "/feed", {"params": {"user_id": 5, "k": 0}}, 422, "k"),
    ("get", "/feed", {"params": {"user_id": 5, "k": 10_000}}, 422, "less than or equal"),
    ("get", "/feed", {"params": {"user_id": -1}}, 422, "user_id"),
    ("get", "/feed", {"params": {"k": 3}}, 422, "user_id"),
    ("post", "/events", {"data": b"{not json"}, 400, "not JSON"),
    ("post", "/events", {"json": [action(event_time=1_750_000_000)]}, 422, "seconds or microseconds"),
    ("post", "/events", {"json": [action(), action(kind="rate")]}, 422, "index"),
    ("post", "/events", {"json": [action()] * 6}, 413, "1..5"),
    ("post", "/events", {"data": b" " * 5000}, 413, "limit is 4096"),
])
def test_bad_requests_get_4xx_with_reasons(server, method, path, kwargs, status, words):
    got = getattr(requests, method)(f"{server.url}{path}", timeout=30, **kwargs)
    assert got.status_code == status, got.text
    assert words in got.text


def test_no_champion_answers_503_and_docs_are_served(stack):
    app = create_app(stack, source=tables(), loader=StaticLoader(None), catalogue=Catalogue())
    s = Server(app, stack.serving.port + 1)
    try:
        got = requests.get(f"{s.url}/feed", params={"user_id": 1}, timeout=30)
        assert got.status_code == 503 and "make retrain" in got.json()["error"]
        assert "/feed" in requests.get(f"{s.url}/openapi.json", timeout=30).json()["paths"]
        assert requests.get(f"{s.url}/docs", timeout=30).status_code == 200
    finally:
        s.stop()


def test_metrics_count_feeds_stages_and_rejected_events(server):
    requests.get(f"{server.url}/feed", params={"user_id": 6, "k": 3}, timeout=30)
    requests.post(f"{server.url}/events", json=[action(kind="rate")], timeout=30)
    text = requests.get(f"{server.url}/metrics/", timeout=30).text
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("flywheel_serving_feed_requests_total", (("status", "200"),))] >= 1
    for stage in ("queue", "retrieve", "rank", "log", "total"):
        assert samples[("flywheel_serving_feed_latency_seconds_count", (("stage", stage),))] >= 1
    assert samples[("flywheel_serving_events_total", (("result", "invalid"),))] >= 1
    assert samples[("flywheel_serving_model_info", (("version", "7"),))] == 1
    assert any(name == "flywheel_serving_invalid_events_total" and value >= 1 for (name, _), value in samples.items())


def test_demo_page_its_api_and_retrieval_paths(server):
    page = requests.get(f"{server.url}/demo", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/demo/static/demo.js" in page.text
    script = requests.get(f"{server.url}/demo/static/demo.js", timeout=30)
    assert script.status_code == 200 and "innerHTML" not in script.text  # server text is only ever set as text
    users = requests.get(f"{server.url}/demo/api/users", timeout=30).json()
    assert 10**12 <= users["new_user"] < 2 * 10**12 and isinstance(users["known"], list)
    feed = requests.get(f"{server.url}/feed", params={"user_id": 5, "k": 5}, timeout=30).json()
    assert any(item["path"] for item in feed["items"])  # which Deep Retrieval path brought each item in
    assert {item["title"] for item in feed["items"] if item["item_id"] == 3} <= {"<b>Three</b>"}  # as data

    url = f"{server.url}/demo/api/users/5/embedding"
    first = requests.get(url, timeout=30).json()
    assert first["has_row"] and first["changed_at"] is None  # no change seen yet
    assert requests.get(url, timeout=30).json()["changed_at"] is None
    server.source.push("user_id", np.array([5], np.uint64), np.ones((1, 8), np.float32))  # training -> serving
    changed = requests.get(url, timeout=30).json()
    assert changed["digest"] != first["digest"] and changed["changed_at"] >= first["checked_at"]
    assert requests.get(f"{server.url}/demo/api/users/-1/embedding", timeout=30).status_code == 422
    panels = requests.get(f"{server.url}/demo/api/panels", timeout=30).json()
    assert {p["name"] for p in panels["panels"]} >= {"collector", "joiner", "trainer", "sync", "freshness", "champion"}
    assert next(p for p in panels["panels"] if p["name"] == "champion")["figures"]["version"] == "7"


class HeldRetriever:
    """The trained retriever, held at each query until the test lets it go (a slow feed)."""

    def __init__(self, retriever, entered: threading.Event, release: threading.Event):
        self.retriever, self.entered, self.release = retriever, entered, release

    def __getattr__(self, name):
        return getattr(self.retriever, name)

    def retrieve(self, *args, **kwargs):
        self.entered.set()
        assert self.release.wait(30), "the test never released the feed"
        return self.retriever.retrieve(*args, **kwargs)

    def retrieve_with_paths(self, *args, **kwargs):  # what the feed calls
        self.entered.set()
        assert self.release.wait(30), "the test never released the feed"
        return self.retriever.retrieve_with_paths(*args, **kwargs)


def test_feeds_beyond_the_in_flight_limit_are_shed_with_retry_after(stack, tmp_path_factory):
    source = tables()
    model = trained_loader(tmp_path_factory.mktemp("bundle"), source).current
    entered, release = threading.Event(), threading.Event()
    held = StaticLoader(model.__class__(model.version, model.ranker, HeldRetriever(model.retriever, entered, release),
                                        model.meta, model.loaded_at))
    cfg = stack.model_copy(update={"serving": stack.serving.model_copy(update={"max_inflight_feeds": 1})})
    s = Server(create_app(cfg, source=source, loader=held, catalogue=Catalogue()), stack.serving.port + 2)
    try:
        first: dict = {}
        t = threading.Thread(target=lambda: first.update(r=requests.get(f"{s.url}/feed", params={"user_id": 1},
                                                                        timeout=60)))
        t.start()
        assert entered.wait(30), "the first feed never reached retrieval"
        shed = requests.get(f"{s.url}/feed", params={"user_id": 2}, timeout=30)
        assert shed.status_code == 503 and shed.headers["Retry-After"] == "1"
        assert "max_inflight_feeds" in shed.json()["error"]
        release.set()
        t.join(60)
        assert first["r"].status_code == 200 and len(first["r"].json()["items"]) == 10
        assert requests.get(f"{s.url}/feed", params={"user_id": 3}, timeout=30).status_code == 200  # slot freed
        text = requests.get(f"{s.url}/metrics/", timeout=30).text
        assert "flywheel_serving_feeds_shed_total 1.0" in text and "flywheel_serving_feeds_in_flight 0.0" in text
    finally:
        release.set()
        s.stop()


def test_a_feed_while_the_serving_ps_does_not_answer_is_a_503_to_retry_not_a_500(stack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle")
    trained_loader(folder)
    with socket.socket() as sock:  # a port nobody listens on: the serving PS is down (restarting)
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    down = PSClient([f"grpc+tcp://127.0.0.1:{dead}"], DIMS, timeout_s=1, retries=1)
    ranker, retriever, meta = load_bundle(folder, down)
    loader = StaticLoader(Loaded("7", ranker, retriever, meta, time.time()))
    s = Server(create_app(stack, source=down, loader=loader, catalogue=Catalogue()), stack.serving.port + 4)
    try:
        got = requests.get(f"{s.url}/feed", params={"user_id": 1}, timeout=30)
        assert got.status_code == 503 and got.headers["Retry-After"] == "1", got.text
        assert "serving parameter server did not answer" in got.json()["error"]
        text = requests.get(f"{s.url}/metrics/", timeout=30).text
        assert "flywheel_serving_ps_unavailable_total 1.0" in text
        assert 'flywheel_serving_feed_requests_total{status="503"} 1.0' in text
    finally:
        s.stop()
        down.close()


def test_with_an_api_key_required_the_feed_events_and_demo_api_refuse_requests_without_it(
        stack, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_API_KEY", "k-" + uuid.uuid4().hex)
    source = tables()
    cfg = stack.model_copy(update={"serving": stack.serving.model_copy(update={"require_api_key": True})})
    s = Server(create_app(cfg, source=source, loader=trained_loader(tmp_path_factory.mktemp("bundle"), source),
                          catalogue=Catalogue()), stack.serving.port + 3)
    key = {"X-API-Key": os.environ["FLYWHEEL_API_KEY"]}
    try:
        doors = [("GET", "/feed", {"params": {"user_id": 1}}), ("POST", "/events", {"json": action()}),
                 ("GET", "/demo/api/panels", {}), ("GET", "/demo/api/users", {})]
        for method, path, kwargs in doors:
            for headers in ({}, {"X-API-Key": "wrong"}):
                got = requests.request(method, s.url + path, headers=headers, timeout=30, **kwargs)
                assert got.status_code == 401, (path, headers, got.text)
                assert "X-API-Key" in got.json()["error"] and got.headers["WWW-Authenticate"] == "ApiKey"
        assert requests.get(f"{s.url}/feed", params={"user_id": 1}, headers=key, timeout=30).status_code == 200
        assert requests.get(f"{s.url}/demo/api/users", headers=key, timeout=30).status_code == 200
        for open_path in ("/health", "/demo", "/docs", "/openapi.json"):  # no data behind these
            assert requests.get(s.url + open_path, timeout=30).status_code == 200, open_path
        text = requests.get(f"{s.url}/metrics/", timeout=30).text
        assert "flywheel_serving_unauthorized_total 8.0" in text
    finally:
        s.stop()


# -- fuzzing from the OpenAPI spec (schemathesis): every operation, FLYWHEEL_FUZZ_EXAMPLES each --
FUZZ_EXAMPLES = int(os.environ.get("FLYWHEEL_FUZZ_EXAMPLES", "25"))


OPERATIONS = [("GET", "/feed"), ("POST", "/events"), ("GET", "/demo/api/users"),
              ("GET", "/demo/api/users/{user_id}/embedding"), ("GET", "/demo/api/panels"), ("GET", "/health")]


@pytest.fixture(scope="module")
def api_schema(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    listed = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert listed == set(OPERATIONS), f"the spec's operations changed: {sorted(listed)}; fuzz the new ones too"
    return schema


@pytest.mark.fuzz
@pytest.mark.parametrize("method, path", OPERATIONS)
def test_every_operation_answers_generated_and_mutated_input_as_its_spec_says(api_schema, server, method, path):
    """Valid and invalid input alike: never a 5xx other than the documented 503, every status
    and body as the spec documents them, valid input accepted and invalid refused."""
    tried = []

    # JSON Schema counts 1.0 as an integer; the collector refuses it, as every Flywheel schema
    # does (no coercion; the spec's description says so), so for /events "valid input is
    # accepted" is left to the directed tests above
    excluded = [positive_data_acceptance] if path == "/events" else []

    @given(case=api_schema[path][method].as_strategy())
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case):
        tried.append(case)
        case.call_and_validate(base_url=server.url, excluded_checks=excluded)

    fuzz()
    assert tried, f"{method} {path}: no input generated"
