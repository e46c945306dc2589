"""The online A/B test on the real broker and Flink joiner: a model server splitting users
between the champion and the popularity arm writes each user's arm into the features it
serves; the joiner joins them with the users' actions; each arm's rates are computed from
the joined examples as the online trainer computes them (pipelines/online/arms.py)."""

import time

import pytest
import requests

from flywheel.stack import kafka_acls
from pipelines.online.arms import ArmRates
from serving.app import create_app
from serving.arms import TrafficSplit
from serving.catalogue import Catalogue
from streaming.schemas import arm_of
from tests.integration.test_joiner import Joiner
from tests.integration.test_model_server import Server
from tests.serving_models import tables, trained_loader

pytestmark = pytest.mark.integration
USERS, K = 80, 4
CLICKS = {"champion": 2, "popularity": 1}  # each arm's users click this many of their K items, skip the rest


@pytest.fixture
def joiner(stack):
    j = Joiner(stack, **{"negative-rate": 1.0})
    yield j
    j.close()


def test_arms_are_assigned_in_their_shares_and_measured_from_joined_examples(stack, joiner, tmp_path):
    traffic = {"champion": 0.5, "popularity": 0.5}
    cfg = stack.model_copy(update={"serving": stack.serving.model_copy(update={
        "features_topic": joiner.topics["features"], "actions_topic": joiner.topics["actions"], "traffic": traffic})})
    kafka_acls.ensure(cfg)  # the model server's grants on these topics
    source = tables()
    server = Server(create_app(cfg, source=source, loader=trained_loader(tmp_path, source), catalogue=Catalogue()),
                    stack.serving.port)
    split, served = TrafficSplit(traffic, cfg.serving.traffic_salt), {}
    try:
        with requests.Session() as http:
            for user in range(1, USERS + 1):
                feed = http.get(f"{server.url}/feed", params={"user_id": user, "k": K}, timeout=30).json()
                arm = arm_of(feed["model_version"])
                assert arm == split.arm(user), (user, feed["model_version"])  # the user's arm, by the split
                served[user] = arm
                now = int(time.time() * 1000)
                events = [{"schema_version": 1, "request_id": feed["request_id"], "user_id": user, "item_id": item["item_id"],
                           "event_time": now, "action": "click" if n < CLICKS[arm] else "skip"}
                          for n, item in enumerate(feed["items"])]
                assert http.post(f"{server.url}/events", json={"events": events}, timeout=30).status_code == 202
    finally:
        server.stop()
    users = {arm: sum(a == arm for a in served.values()) for arm in traffic}
    assert min(users.values()) >= USERS * 0.5 - 3 * (USERS * 0.25) ** 0.5  # 50/50 within 3 sd
    # every impression is joined at once: a click is a positive, a skip an explicit negative
    examples = joiner.read("examples", USERS * K, settle_s=3)
    assert len(examples) == USERS * K
    rates = ArmRates()
    rates.add(examples, ["click", "like"])
    got = rates.figures()
    for arm, clicks in CLICKS.items():
        click = got[arm]["click"]
        assert click["impressions"] == users[arm] * K and click["positives"] == users[arm] * clicks
        assert click["rate"] == pytest.approx(clicks / K) and click["lo"] < click["rate"] < click["hi"]
        assert got[arm]["like"]["rate"] == 0.0
    assert got["champion"]["click"]["lo"] > got["popularity"]["click"]["hi"]  # 0.5 vs 0.25 at ~160 impressions each
