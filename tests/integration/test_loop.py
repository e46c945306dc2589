"""The closed loop on the real stack: the supervised model server and online trainer, the Flink
joiner, the parameter servers and a champion published by the daily retrain's code.

serve -> log features -> join with actions -> train online -> sync -> serve with fresher
embeddings: a new user who keeps liking one genre sees it rise in the feed within a bounded
number of rounds and stay up, the serving PS holds the user's trained row, served features are on Kafka,
the trainer counts the joined examples, a kill -9 of the trainer loses none of the examples
that arrive while it is down, and bad requests get 4xx with reasons.

The champion is trained on the same synthetic data as test_daily_retrain (reused when that
test published it; otherwise backfilled and retrained here).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import numpy as np
import pytest
import requests
from kafka import KafkaConsumer

from flywheel.prometheus import scrape, value
from flywheel.secrets import kafka_args
from flywheel.stack.supervisor import Supervisor
from datasets.movielens_sample import write_movielens
from simulator.freshness import probe_once
from tests.integration.loop_stack import running_loop, wait

pytestmark = pytest.mark.integration
ROUNDS = 12  # feed -> actions -> wait for the sync, at most this many times
CATALOGUE = 60  # items of the synthetic data: a feed of all of them ranks every item
RISE = 0.12  # the liked genre's mean position moves up by this share of the feed at least
HOLD = 2  # rounds after the rise in which it must not fall back (more than SLACK)
SLACK = 0.05


@pytest.fixture(scope="module")
def loop(stack, tmp_path_factory):
    folder = write_movielens(tmp_path_factory.mktemp("ml"), users=120, items=60, ratings_per_user=25, days=4)
    with running_loop(stack, folder) as running:
        yield running


def genre_share(feed: dict, genre: str, top: int = 10) -> float:
    return sum(genre in item["genres"] for item in feed["items"][:top]) / top


def genre_rank(feed: dict, genre: str) -> float:
    """Mean position of the genre's items in the whole feed, as a share of its length (0 = top)."""
    positions = [n for n, item in enumerate(feed["items"]) if genre in item["genres"]]
    return float(np.mean(positions)) / (len(feed["items"]) - 1)


def act(session, url: str, feed: dict, genre: str) -> None:
    """Click, like and finish every item of ``genre``; skip the others."""
    now = int(time.time() * 1000)
    events = []
    for item in feed["items"]:
        kinds = ("click", "like", "finish") if genre in item["genres"] else ("skip",)
        events += [{"schema_version": 1, "request_id": feed["request_id"], "user_id": feed["user_id"],
                    "item_id": item["item_id"], "event_time": now, "action": kind} for kind in kinds]
    got = session.post(f"{url}/events", json={"events": events}, timeout=30)
    assert got.status_code == 202, got.text


def test_a_user_who_likes_one_genre_sees_it_rise_and_the_loop_closes(stack, loop):
    """The user is shown the whole catalogue (k = 60) each round and engages with every item of
    one genre: after a bounded number of syncs that genre sits higher in their feed."""
    url, ps, session = loop["url"], loop["ps"], requests.Session()
    user = 700_000_000 + uuid.uuid4().int % 10**6  # a new user: cold start, no row anywhere
    ids = np.array([user], np.uint64)
    first = session.get(f"{url}/feed", params={"user_id": user, "k": CATALOGUE}, timeout=30).json()
    assert len(first["items"]) == CATALOGUE
    # the champion's feeds come from the NumPy pass: it agreed with TensorFlow on the first feed
    wait(lambda: session.get(f"{url}/health", timeout=30).json()["forward"] != "pending", 30, "the first-feed check", 0.1)
    forward = session.get(f"{url}/health", timeout=30).json()["forward"]
    assert forward == "numpy", "TensorFlow serves the champion: the NumPy pass disagreed (model-server log)"
    # the genre to like: the one ranked lowest for this user (the most room to rise)
    genres = {g for item in first["items"] for g in item["genres"]}
    genre = max(genres, key=lambda g: (genre_rank(first, g), g))
    before = genre_rank(first, genre)
    examples_before = value(scrape(loop["metrics"]), "flywheel_online_examples_total")

    feed, ranks, updates, risen_at = first, [], 0, None
    for n in range(ROUNDS + HOLD):
        row = np.array(ps.pull("user_id", ids)[0], copy=True)
        act(session, url, feed, genre)
        # one sync later (bounded): the serving PS holds the user's row, trained on those actions
        try:
            wait(lambda: not np.array_equal(ps.pull("user_id", ids)[0], row), 30, "the user's row on serving", 0.1)
            updates += 1
        except AssertionError:
            pass
        feed = session.get(f"{url}/feed", params={"user_id": user, "k": CATALOGUE}, timeout=30).json()
        ranks.append(genre_rank(feed, genre))
        if risen_at is None and ranks[-1] <= before - RISE:
            risen_at = n
        if (risen_at is not None and n == risen_at + HOLD) or (risen_at is None and n == ROUNDS - 1):
            break
    print(f"genre {genre}: mean position {before:.2f} -> {[round(r, 2) for r in ranks]}; "
          f"top-10 share {genre_share(first, genre):.1f} -> {genre_share(feed, genre):.1f}; "
          f"serving row updated {updates} times")
    assert updates >= 2, "online training did not reach the serving PS"
    assert risen_at is not None, f"the liked genre did not rise by {RISE} in {ROUNDS} rounds: {before:.2f} -> {ranks}"
    # and it stays up: a task learned as 0 before its 1 (a like first trained as 0) drifted back
    assert ranks[-1] <= min(ranks) + SLACK, f"the liked genre fell back after rising: {before:.2f} -> {ranks}"
    assert genre_share(feed, genre) >= genre_share(first, genre)

    # served features are on Kafka under the request id; joined examples reached the trainer
    consumer = KafkaConsumer(stack.serving.features_topic, **kafka_args(stack),
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    logged = [json.loads(r.value) for r in consumer if r.key == str(user).encode()]
    consumer.close()
    assert {r["request_id"] for r in logged} >= {first["request_id"], feed["request_id"]}
    assert value(scrape(loop["metrics"]), "flywheel_online_examples_total") > examples_before


def test_kill_9_of_the_trainer_loses_no_example(stack, loop):
    """Examples joined while the trainer is dead are trained on after supervisord restarts it:
    it rolls back to its newest snapshot and replays the topic from the snapshot's offsets."""
    url, ps, session = loop["url"], loop["ps"], requests.Session()
    sup = Supervisor(loop["cfg"])
    pid = sup.info()["online-trainer"]["pid"]
    os.kill(pid, signal.SIGKILL)
    user = 710_000_000 + uuid.uuid4().int % 10**6
    ids = np.array([user], np.uint64)
    feed = session.get(f"{url}/feed", params={"user_id": user, "k": 5}, timeout=30).json()
    act(session, url, feed, feed["items"][0]["genres"][0])  # while no trainer runs
    wait(lambda: sup.info()["online-trainer"]["pid"] not in (0, pid), 60, "supervisord restarting the trainer")
    wait(lambda: value(scrape(loop["metrics"]), "flywheel_online_champion_version") > 0, 180, "the trainer back")
    assert value(scrape(loop["metrics"]), "flywheel_online_recoveries_total") >= 1  # a new process: its start
    wait(lambda: np.abs(ps.pull("user_id", ids)[0]).sum() > 0, 120, "the examples of the downtime trained and synced")
    wait(lambda: value(scrape(loop["metrics"]), "flywheel_online_consumer_lag") == 0, 120, "the trainer catching up")


def test_freshness_probe_measures_the_whole_loop(loop):
    seconds = probe_once(requests.Session(), loop["url"], loop["ps"], 720_000_000 + uuid.uuid4().int % 10**6,
                         timeout_s=60)
    assert seconds is not None and 0 < seconds < 60


@pytest.mark.parametrize("path, params, status, words", [
    ("/feed", {"user_id": "abc"}, 422, "user_id"),
    ("/feed", {"user_id": 1, "k": 100_000}, 422, "less than or equal"),
])
def test_bad_requests_to_the_running_server_get_4xx_with_reasons(loop, path, params, status, words):
    got = requests.get(f"{loop['url']}{path}", params=params, timeout=30)
    assert got.status_code == status and words in got.text
    metrics = scrape(f"{loop['url']}/metrics/")
    assert value(metrics, "flywheel_serving_feed_requests_total", status="422") >= 1
