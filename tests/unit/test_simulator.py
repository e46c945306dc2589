"""The user simulator: the population's split and action rules (levels, attribute taste, seeds,
drift), late actions, and the replay over real HTTP against a small stand-in of the model
server (the server itself is tested in test_feed.py and the integration tests)."""

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
import requests

from flywheel.config import ConfigError, load_config
from datasets import load
from datasets.history import attr_id
from datasets.movielens_sample import write_movielens
from simulator.client import GaveUp, ModelServerClient
from simulator.late import LateActions, split_late
from simulator.metrics import SimulatorMetrics
from simulator.population import Population, actions_for_level
from simulator.replay import Simulator, session_offsets
from streaming.schemas import Action, parse_action

DRAMA, COMEDY, HORROR = (attr_id("items", f"genre={g}") for g in ("Drama", "Comedy", "Horror"))
STARS = {5: (1, 1, 1), 4: (1, 1, 0), 3: (1, 0, 0), 1: (0, 0, 0)}  # a rating as click, like, finish (1: skipped)


def events(rows) -> pd.DataFrame:
    """(user, item, stars, time) rows as ``Dataset.events``."""
    return pd.DataFrame([(u, i, t, f"{u}@{t}", 0, *STARS[r], 0) for u, i, r, t in rows],
                        columns=["user", "item", "time", "request", "position", "click", "like", "finish", "share"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_movielens(tmp_path_factory.mktemp("ml"), users=40, items=60, ratings_per_user=20, days=10)


@pytest.fixture(scope="module")
def population(folder):
    return Population.from_dataset(load(folder), holdout=0.2, seed=3)


def tastes() -> Population:
    """User 1 loves drama (finishes), skips horror; comedy unseen. Item 9 is held out."""
    genres = {i: [DRAMA] for i in range(1, 6)} | {i: [HORROR] for i in range(6, 9)} | {9: [DRAMA], 10: [COMEDY],
                                                                                       11: [DRAMA], 12: [HORROR]}
    rows = [(1, i, 5, 100 + i) for i in range(1, 6)] + [(1, i, 1, 200 + i) for i in range(6, 9)]
    rows += [(2, 10, 3, 300)]  # someone rated comedy
    known = events(rows)
    heldout = events([(1, 9, 1, 900), (2, 11, 4, 901)])
    return Population(known, heldout, genres, seed=0)


# -- population ------------------------------------------------------------------------------
def test_the_latest_requests_are_the_sessions(population, folder):
    ratings = load(folder).events
    sessions = population.sessions()
    assert sessions["time"].is_monotonic_increasing
    assert sessions["time"].min() >= ratings["time"].quantile(0.8)
    assert 0.15 * len(ratings) < len(sessions) <= 0.2 * len(ratings) + 1
    first3 = population.sessions(users=3)
    assert list(pd.unique(first3["user"])) == list(pd.unique(sessions["user"]))[:3]
    assert len(first3) == sessions["user"].isin(first3["user"]).sum()


@pytest.mark.parametrize("level, actions", [
    (3, ("click", "like", "finish")), (2, ("click", "like")), (1, ("click",)), (0, ("skip",)), (5, ("click", "like", "finish")),
])
def test_a_level_stands_for_actions(level, actions):
    assert actions_for_level(level) == actions


def test_a_held_out_item_is_acted_on_by_its_level(population):
    rng = np.random.default_rng(0)
    for user, item, level in population.heldout[["user", "item", "level"]].head(30).itertuples(index=False):
        reactions = population.respond(user, [item], rng)
        assert [r.action for r in reactions] == list(actions_for_level(level))
        assert {r.item_id for r in reactions} == {item}


def test_unrated_items_follow_the_genre_taste():
    p = tastes()
    assert p.level(1, 9) == 0 and p.level(1, 11) is None
    liked, average, hated = p.click_probability(1, 11), p.click_probability(1, 10), p.click_probability(1, 12)
    assert liked > 0.1 > average > hated  # a drama is likelier than a comedy, than a horror film
    assert p.affinity(1)[DRAMA] > p.affinity(1)[COMEDY] > p.affinity(1)[HORROR]
    rng = np.random.default_rng(0)
    clicks = sum(any(r.action == "click" for r in p.respond(1, [11], rng)) for _ in range(2000))
    assert clicks / 2000 == pytest.approx(liked, abs=0.04)
    assert [r.action for r in p.respond(1, [9], rng)] == ["skip"]  # held out as skipped: by its level


def test_unrated_items_are_clicked_at_a_low_base_rate(population):
    users = population.heldout["user"].unique()[:10]
    p = [population.click_probability(u, i) for u in users for i in range(1, 61) if population.level(u, i) is None]
    assert 0.03 < np.mean(p) < 0.15


def test_the_same_seed_gives_the_same_reactions(population):
    user, items = int(population.heldout["user"][0]), list(range(1, 61))
    first = population.respond(user, items, np.random.default_rng(7))
    assert population.respond(user, items, np.random.default_rng(7)) == first
    assert any(population.respond(user, items, np.random.default_rng(s)) != first for s in range(8, 12))


def test_drift_rotates_each_users_tastes_the_same_way_every_run():
    p, again = tastes(), tastes()
    before, after = p.affinity(1), p.affinity(1, drifted=True)
    assert sorted(before.values()) == pytest.approx(sorted(after.values())) and before != after
    assert again.affinity(1, drifted=True) == after
    assert max(after, key=after.get) != DRAMA  # the favourite genre changed
    assert p.click_probability(1, 11, drifted=True) < p.click_probability(1, 11)
    rng = np.random.default_rng(0)
    drifted = [r.action for _ in range(300) for r in p.respond(1, [9], rng, drifted=True)]
    assert "skip" not in drifted  # the held-out event describes the old taste: by affinity now


# -- timing and late actions ------------------------------------------------------------------
def test_session_offsets_divide_event_time_gaps_by_the_speedup():
    times = np.array([1000, 1000, 4600, 8200])
    np.testing.assert_allclose(session_offsets(times, 3600), [0, 0, 1, 2])
    np.testing.assert_allclose(session_offsets(times, 0), [0, 0, 0, 0])


def _action(item: int, t: int = 1_700_000_000_000) -> Action:
    return Action(request_id="r1", user_id=1, item_id=item, event_time=t, action="click")


def test_late_actions_are_held_back_then_released_with_their_event_time():
    late = LateActions(delay_s=10)
    late.hold([_action(1), _action(2)], now=100.0)
    late.hold([_action(3, t=1_700_000_005_000)], now=105.0)
    assert late.next_due() == 110.0 and late.last_due() == 115.0
    assert late.due(109.9) == []
    assert late.due(110.0) == [_action(1), _action(2)]  # unchanged: their original event_time
    assert [a.event_time for a in late.take_all()] == [1_700_000_005_000] and len(late) == 0
    actions = [_action(i) for i in range(1000)]
    on_time, held = split_late(actions, 0.3, np.random.default_rng(0))
    assert len(on_time) + len(held) == 1000 and 250 < len(held) < 350
    assert split_late(actions, 0, np.random.default_rng(0)) == (actions, [])


# -- replay over HTTP -------------------------------------------------------------------------
class FakeModelServer:
    """Stand-in for serving/app.py's /feed and /events: answers 503 ``no_model`` times, then
    feeds of ``items_for(user)``; records each feed and each POST with its arrival time (ms)."""

    def __init__(self, items_for, no_model: int = 0, events_status: int = 202, shed: int = 0):
        self.items_for, self.no_model, self.events_status = items_for, no_model, events_status
        self.shed = shed  # 503s with Retry-After first (the server sheds feeds, or its serving PS restarts)
        self.feeds: dict[str, tuple[int, list[int]]] = {}
        self.posts: list[tuple[int, list[dict]]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def events(self) -> list[dict]:
        return [e for _, batch in self.posts for e in batch]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: dict, retry_after: bool = False) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                if retry_after:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                query = parse_qs(urlparse(self.path).query)
                user, k = int(query["user_id"][0]), int(query["k"][0])
                with fake.lock:
                    if fake.shed > 0:
                        fake.shed -= 1
                        return self.reply(503, {"error": "the serving parameter server did not answer"}, True)
                    if fake.no_model > 0:
                        fake.no_model -= 1
                        return self.reply(503, {"error": "no champion model yet: run make retrain"})
                    request_id = f"req-{len(fake.feeds)}"
                    items = fake.items_for(user)[:k]
                    fake.feeds[request_id] = (user, items)
                version = "popularity:24h" if user % 2 else "flywheel/1"  # two A/B arms
                self.reply(200, {"request_id": request_id, "model_version": version, "user_id": user,
                                 "items": [{"item_id": i, "position": n, "score": 0.5, "scores": {}, "title": "",
                                            "genres": []} for n, i in enumerate(items)]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.posts.append((time.time_ns() // 1_000_000, body["events"]))
                if fake.events_status != 202:
                    return self.reply(fake.events_status, {"error": "1 of 1 events are invalid", "invalid": []})
                self.reply(202, {"accepted": len(body["events"])})

        return Handler

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def held_out_first(population: Population):
    """A feed showing the user's held-out items first (so they act by their level), then others."""
    def items_for(user: int) -> list[int]:
        rated = population.heldout.loc[population.heldout["user"] == user, "item"].tolist()
        return list(dict.fromkeys(rated + list(range(1, 61))))
    return items_for


def fast(population: Population, url: str, **kwargs) -> Simulator:
    kwargs = {"k": 10, "rate": 1000, "seed": 1, "min_backoff_s": 0.01, "max_backoff_s": 0.05, **kwargs}
    return Simulator(population, url, **kwargs)


def test_replay_posts_valid_actions_on_the_feeds_it_got_and_retries_503(population):
    server = FakeModelServer(held_out_first(population), no_model=2, shed=1)
    seen, accepted = [], []
    sim = fast(population, server.url, late_share=0.4, late_delay_s=0.3, on_feed=lambda *a: seen.append(a),
               on_accepted=accepted.extend)
    try:
        sessions = sim.run(once=True, users=5)
    finally:
        sim.close()
        server.close()
    assert sessions == len(population.sessions(users=5)) == len(server.feeds)
    m = sim.metrics
    assert m.value("flywheel_simulator_feed_requests_total", status="503") == 3  # retried, not lost
    assert m.value("flywheel_simulator_feed_requests_total", status="200") == sessions
    assert m.value("flywheel_simulator_errors_total", kind="no_model") == 2  # told apart by Retry-After
    assert m.value("flywheel_simulator_errors_total", kind="feed_unavailable") == 1
    assert m.value("flywheel_simulator_feed_latency_seconds_count") == sessions + 3
    assert [ok for _, ok, _ in seen] == [False] * 3 + [True] * sessions  # every attempt, for make chaos
    wire = lambda e: json.dumps(e, sort_keys=True)  # noqa: E731
    assert sorted(wire(a.model_dump(mode="json", exclude_none=True)) for a in accepted) == sorted(
        wire(e) for e in server.events)  # each action the server accepted, once

    actions = [parse_action(json.dumps(e)) for e in server.events]  # valid on the wire
    assert actions
    for a in actions:
        user, items = server.feeds[a.request_id]  # the feed that showed the item
        assert a.user_id == user and a.item_id in items
        if (level := population.level(user, a.item_id)) is not None:
            assert a.action in actions_for_level(level)
    for action in {a.action for a in actions}:
        assert m.value("flywheel_simulator_actions_total", action=action) == sum(a.action == action for a in actions)

    arm = lambda user: "popularity" if user % 2 else "champion"  # noqa: E731 - as the fake server serves
    by_arm = m.rates_by_arm()
    for name in ("champion", "popularity"):  # per arm: what was shown, and what the users did with it
        shown = sum(len(items) for user, items in server.feeds.values() if arm(user) == name)
        assert by_arm[name]["shown"] == shown > 0
        clicks = sum(a.action == "click" and arm(a.user_id) == name for a in actions)
        assert by_arm[name]["click_rate"] == pytest.approx(clicks / shown)
        assert m.value("flywheel_simulator_reactions_total", arm=name, action="click") == clicks

    late = [(received, e) for received, batch in server.posts for e in batch if received - e["event_time"] >= 300]
    assert 0 < len(late) < len(actions)  # some held back 0.3 s, posted with their original event_time
    assert m.value("flywheel_simulator_late_actions_total") == len(late)


def test_a_refused_post_is_counted_and_logged_and_the_run_goes_on(population, caplog):
    server = FakeModelServer(held_out_first(population), events_status=422)
    sim = fast(population, server.url)
    try:
        with caplog.at_level(logging.ERROR, logger="simulator.client"):
            sessions = sim.run(once=True, users=2)
    finally:
        sim.close()
        server.close()
    assert sessions == len(population.sessions(users=2)) and len(server.posts) >= sessions
    assert sim.metrics.value("flywheel_simulator_errors_total", kind="client_error") == len(server.posts)
    assert sim.metrics.value("flywheel_simulator_actions_total", action="click") == 0
    assert "422" in caplog.text and "events are invalid" in caplog.text


def test_stop_posts_the_held_back_actions_at_once(population):
    server = FakeModelServer(held_out_first(population))
    sim = fast(population, server.url, rate=50, late_share=1.0, late_delay_s=60)
    runner = threading.Thread(target=sim.run)  # forever, until stopped
    runner.start()
    time.sleep(0.4)
    sim.stop()
    runner.join(timeout=5)
    sim.close()
    server.close()
    assert not runner.is_alive() and len(sim.late) == 0
    assert server.events and sim.metrics.value("flywheel_simulator_late_actions_total") == len(server.events)


def test_tastes_drift_after_the_configured_time(population):
    assert not fast(population, "http://127.0.0.1:1", drift_after_s=None).drifted
    assert not fast(population, "http://127.0.0.1:1", drift_after_s=3600).drifted
    sim = fast(population, "http://127.0.0.1:1", drift_after_s=0)
    assert sim.drifted and sim.metrics.value("flywheel_simulator_drifted") == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_retried_until_the_run_ends():
    metrics, attempts = SimulatorMetrics(), []
    client = ModelServerClient(f"http://127.0.0.1:{_free_port()}", metrics, min_backoff_s=0.01, max_backoff_s=0.01,
                               should_stop=lambda: len(attempts) >= 3 or attempts.append(1))
    with pytest.raises(GaveUp, match="GET /feed"):
        client.feed(1, 10)
    assert metrics.value("flywheel_simulator_errors_total", kind="connection") == 4
    assert metrics.value("flywheel_simulator_feed_requests_total", status="error") == 4


def test_metrics_are_served_for_prometheus():
    metrics = SimulatorMetrics()
    metrics.actions.labels("click").inc(3)
    port = _free_port()
    server = metrics.serve("127.0.0.1", port)
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        server.server_close()
    assert 'flywheel_simulator_actions_total{action="click"} 3.0' in text
    assert "flywheel_simulator_feed_latency_seconds_bucket" in text
    assert SimulatorMetrics().value("flywheel_simulator_actions_total", action="click") == 0  # own registry


# -- config ----------------------------------------------------------------------------------
def test_config_and_its_errors(folder):
    test = load_config(files=[Path("config/test.yaml")], environ={})
    assert test.simulator.metrics_port == 19400 and test.all_ports()["simulator.metrics_port"] == 19400
    with pytest.raises(FileNotFoundError, match="--data"):
        Simulator.from_config(load_config(files=[], environ={}))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Simulator.from_config(load_config(files=[], environ={}), data=str(folder / "nope"))
    with pytest.raises(ConfigError, match="serving.max_k"):
        Simulator.from_config(load_config(files=[], environ={"FLYWHEEL__SIMULATOR__K": "200"}), data=str(folder))
    sim = Simulator.from_config(load_config(files=[], environ={"FLYWHEEL__SIMULATOR__RATE": "9"}), data=str(folder))
    assert sim.rate == 9 and sim.client.base_url == "http://127.0.0.1:8000"
    sim.close()


def test_a_post_that_got_no_answer_is_reported_a_refused_one_is_not():
    with socket.socket() as sock:  # nobody listens: the server crashed mid-post
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    unanswered, accepted = [], []
    action = Action(request_id="r", user_id=1, item_id=2, event_time=1_750_000_000_000, action="click")
    client = ModelServerClient(f"http://127.0.0.1:{dead}", SimulatorMetrics(), timeout_s=1, min_backoff_s=0.01,
                               should_stop=lambda: True, on_unanswered=unanswered.extend, on_accepted=accepted.extend)
    with pytest.raises(GaveUp):
        client.post([action])
    assert unanswered == [action] and accepted == []  # may have been written: the reconciliation allows one more
    client.close()

    server = FakeModelServer(lambda user: [1, 2, 3], events_status=503)  # answered: "not written"
    client = ModelServerClient(server.url, SimulatorMetrics(), min_backoff_s=0.01, should_stop=lambda: True,
                               on_unanswered=unanswered.extend)
    try:
        with pytest.raises(GaveUp):
            client.post([action])
    finally:
        client.close()
        server.close()
    assert unanswered == [action] and len(server.posts) == 1
